// Package gctune keeps the garbage collector's headroom proportional to the
// live heap when it is large and at least a fixed number of bytes when it is
// small: GOGC alone is one or the other. A pruning process holds a compact,
// pointer-free plan that grows with the cache (collecting at +10% keeps 10⁸
// paths within 4 GiB) while it allocates short-lived garbage at a high rate
// (listed keys, narinfo bodies); at a million paths the plan is only about
// 50 MiB, and +10% of it meant a collection every 5 MiB of garbage.
package gctune
