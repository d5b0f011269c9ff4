// Package oteltest holds the tests of the library's OpenTelemetry
// tracing and metrics. They need the OpenTelemetry SDK (its in-memory span
// recorder and manual metric reader), which must not enter the library's
// own module: this module of its own has the SDK, and nothing imports it.
//
// The tests check the span tree of a task (start-task, enqueue, each run,
// and the steps, tools and model calls of a langchaingo flow), that one
// trace follows a task through Redis and into a worker process, and the
// metrics of the broker, the worker and the HTTP handler.
package oteltest
