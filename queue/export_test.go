package queue

// GoroutineID is goroutineID, for the package's external tests.
var GoroutineID = goroutineID
