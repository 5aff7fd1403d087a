module github.com/meshrpc/mesh

go 1.26.8

require github.com/dgryski/go-farm v0.0.0-20240924180020-3414d57e47da
