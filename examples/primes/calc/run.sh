#!/bin/sh
# Count the primes in the range LO_HI (the task body) with a segmented
# sieve and send the count back to the router in the header "count".
set -eu
lo=${1%_*}
hi=${1#*_}
count=$(awk -v lo="$lo" -v hi="$hi" 'BEGIN {
  if (lo < 2) lo = 2
  if (hi < lo) { print 0; exit }
  # small primes up to sqrt(hi), without sqrt(): busybox awk in the
  # module image may be built without math support
  lim = 1
  while (lim * lim <= hi) lim++
  for (i = 2; i <= lim; i++) small[i] = 1
  for (i = 2; i * i <= lim; i++) if (small[i]) for (j = i * i; j <= lim; j += i) small[j] = 0
  for (i = 2; i <= lim; i++) if (small[i]) {
    start = int((lo + i - 1) / i) * i
    if (start < i * i) start = i * i
    for (j = start; j <= hi; j += i) composite[j - lo] = 1
  }
  n = 0
  for (k = lo; k <= hi; k++) if (!((k - lo) in composite)) n++
  print n
}')
scalebox task add -H count="$count" "$1"
