// Package dataflow holds the domain model of a Scalebox app: apps, modules,
// tasks, headers, task states and exit codes, the parsing and validation of
// app.yaml and scalebox.env, the sink-tasks line format, retry rules, and the
// role interfaces the server and pilot are written against. It performs no
// I/O beyond reading an app's own files.
package dataflow
