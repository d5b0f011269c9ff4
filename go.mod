module github.com/flowsrun/flows

go 1.25.0

require (
	github.com/redis/rueidis v1.0.79 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	github.com/tmc/langchaingo v0.1.14 // indirect
	golang.org/x/sys v0.47.0 // indirect
)
