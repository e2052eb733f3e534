# Shared by the bench scripts (prepended to their awk programs):
# median(list) of a space-separated list of numbers, the mean of the two
# middle ones for an even count; span(list, fmt) is "lo-hi" in fmt.
function median(list,   a, k, i, j, x) {
  k = split(list, a, " ")
  for (i = 2; i <= k; i++) { x = a[i] + 0; j = i - 1; while (j > 0 && a[j] + 0 > x) { a[j+1] = a[j]; j-- } a[j+1] = x }
  return k % 2 ? a[(k+1)/2] : (a[k/2] + a[k/2+1]) / 2
}
function span(list, fmt,   a, k, i, lo, hi) {
  k = split(list, a, " "); lo = hi = a[1] + 0
  for (i = 2; i <= k; i++) { if (a[i] + 0 < lo) lo = a[i] + 0; if (a[i] + 0 > hi) hi = a[i] + 0 }
  return sprintf(fmt "-" fmt, lo, hi)
}
