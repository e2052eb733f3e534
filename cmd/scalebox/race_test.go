//go:build race

package main

// The e2e binary is built with the race detector when the tests are, so
// data races in the server and pilots show up in real runs.
func init() { raceBuild = true }
