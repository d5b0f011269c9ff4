// Package opspage serves the operators' page of flows: a web page, as an
// http.Handler, that lists the tasks of a queue with filters (state,
// flow, owner, time range), shows the counts, the queue's depth, the
// workers and a live chart of throughput and run time, follows one task's
// events as they happen, re-queues dead tasks (plainly, or resuming the
// steps they completed) and cancels running ones.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary: no
// build step, nothing fetched from elsewhere. It runs under a strict
// Content-Security-Policy (its own script, style and origin only), works
// with a keyboard and a screen reader, and fits a phone's screen.
//
// The page holds no data and no secret: the browser reads everything from
// the operators' routes of an ssehttp.Handler whose Config.Inspector is
// set (GET /tasks/, GET /stats/, GET /dead/, the task's event stream...),
// on the page's own origin, with its own cookies. Who may see and do what
// is decided there, by Config.Identify and Config.Authorize of that
// handler: a caller who is not an operator gets the page, and a 403 on
// every list, which the page shows.
//
// Mount it next to the API, telling it where the API is:
//
//	api := ssehttp.New(ssehttp.Config{Queue: broker, Progress: store, Registry: reg, Inspector: inspector, Identify: identify})
//	ops, err := opspage.New(opspage.Config{API: "/api/"})
//	if err != nil {
//		return err
//	}
//	mux.Handle("/api/", http.StripPrefix("/api", api))
//	mux.Handle("/ops/", http.StripPrefix("/ops", ops))
//
// The handler serves the page at its root and its script and style sheet
// beside it, by relative URLs, so it works under any prefix that ends in
// a slash.
package opspage
