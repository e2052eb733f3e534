package broker

import (
	"strings"
	"sync"
)

// bulkSizes are the row counts of the multi-row INSERT statements used:
// any count is split into powers of two (100 rows = 64 + 32 + 4, three
// statements), so only a few statement texts exist and all stay in the
// prepared-statement cache.
var bulkSizes = []int{256, 128, 64, 32, 16, 8, 4, 2, 1}

var bulkSQL sync.Map // key: head|tail|cols|rows -> statement text

func bulkStatement(head, tail string, cols, rows int) string {
	key := head + "\x00" + tail + "\x00" + string(rune(cols)) + "\x00" + string(rune(rows))
	if s, ok := bulkSQL.Load(key); ok {
		return s.(string)
	}
	tuple := "(" + strings.TrimSuffix(strings.Repeat("?,", cols), ",") + ")"
	s := head + " VALUES " + strings.TrimSuffix(strings.Repeat(tuple+",", rows), ",") + tail
	bulkSQL.Store(key, s)
	return s
}

// bulkExec runs head VALUES (...), (...) tail over rows (each cols
// values), as multi-row INSERTs or UPDATE ... FROM (VALUES ...), and
// returns the rows affected. A per-row statement pays the
// cgo and VM start-up cost per task; this pays it per chunk.
func bulkExec(tx *wtx, head, tail string, cols int, rows [][]any) (int64, error) {
	var total int64
	args := make([]any, 0, min(len(rows), bulkSizes[0])*cols)
	for len(rows) > 0 {
		size := 1
		for _, s := range bulkSizes {
			if len(rows) >= s {
				size = s
				break
			}
		}
		args = args[:0]
		for _, r := range rows[:size] {
			args = append(args, r...)
		}
		res, err := tx.Exec(bulkStatement(head, tail, cols, size), args...)
		if err != nil {
			return total, err
		}
		n, _ := res.RowsAffected()
		total += n
		rows = rows[size:]
	}
	return total, nil
}
