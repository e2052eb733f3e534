module github.com/scalebox-hpc/scalebox

go 1.26.0

require (
	github.com/mattn/go-sqlite3 v1.14.53
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/sys v0.50.0
)
