module github.com/scalebox-hpc/scalebox/bench/broker

go 1.26.5

require (
	github.com/mattn/go-sqlite3 v1.14.53
	github.com/scalebox-hpc/scalebox v0.0.0
	maragu.dev/goqite v0.4.0
)

require (
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/scalebox-hpc/scalebox => ../..
