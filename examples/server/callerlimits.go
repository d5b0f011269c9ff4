package main

import (
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/flowsrun/flows/queue"
)

// callerLimits are the limits per caller the server is told (README:
// Limits per caller). In memory all are off unless set; on Redis, the
// server open to many, a limit not set is a generous default
// (redisDefaultLimits) and 0 turns it off.
type callerLimits struct {
	// Queue are the start rate and the cap on waiting tasks
	// (queue.BrokerConfig.CallerLimits).
	Queue queue.CallerLimits
	// MaxStreams caps a caller's open streams in this process
	// (ssehttp.Config.MaxStreamsPerCaller).
	MaxStreams int
	// TrustedProxies are the proxies whose X-Forwarded-For is believed
	// (ssehttp.Config.TrustedProxies).
	TrustedProxies []netip.Prefix
}

// redisDefaultLimits are the caller limits of a server on Redis whose
// flags leave them unset: queue.DefaultCallerLimits (600 starts a minute,
// 1,000 tasks waiting) and 100 open streams per caller and process.
func redisDefaultLimits() callerLimits {
	return callerLimits{Queue: queue.DefaultCallerLimits(), MaxStreams: 100}
}

// callerLimitFlags defines the flags of the caller limits on fs, their
// defaults from the environment through getenv, and returns the func
// that reads them once fs is parsed, starting from defaults: a flag left
// unset keeps the default's value, 0 turns its limit off.
func callerLimitFlags(fs *flag.FlagSet, getenv func(string) string) func(defaults callerLimits) (callerLimits, error) {
	starts := fs.String("caller-starts", getenv("FLOWS_CALLER_STARTS"), "starts a caller may make per -caller-per, e.g. 600; empty or 0: no limit (env FLOWS_CALLER_STARTS)")
	per := fs.String("caller-per", getenv("FLOWS_CALLER_PER"), "the window of -caller-starts; empty: 1m (env FLOWS_CALLER_PER)")
	pending := fs.String("caller-max-pending", getenv("FLOWS_CALLER_MAX_PENDING"), "tasks of one caller that may wait to start, e.g. 1000; empty or 0: no cap (env FLOWS_CALLER_MAX_PENDING)")
	streams := fs.String("caller-max-streams", getenv("FLOWS_CALLER_MAX_STREAMS"), "task-status streams one caller may hold open in this process; empty or 0: no cap (env FLOWS_CALLER_MAX_STREAMS)")
	proxies := fs.String("trusted-proxies", getenv("FLOWS_TRUSTED_PROXIES"), "comma-separated addresses or CIDRs of the proxies whose X-Forwarded-For names an anonymous caller (env FLOWS_TRUSTED_PROXIES)")
	return func(defaults callerLimits) (callerLimits, error) {
		l := defaults
		var err error
		for _, n := range []struct {
			name string
			text string
			into *int
		}{
			{"-caller-starts", *starts, &l.Queue.Starts},
			{"-caller-max-pending", *pending, &l.Queue.MaxPending},
			{"-caller-max-streams", *streams, &l.MaxStreams},
		} {
			if n.text == "" {
				continue
			}
			if *n.into, err = strconv.Atoi(n.text); err != nil || *n.into < 0 {
				return callerLimits{}, fmt.Errorf("%s %q: want a whole number, 0 or more", n.name, n.text)
			}
		}
		if *per != "" {
			if l.Queue.Per, err = time.ParseDuration(*per); err != nil || l.Queue.Per < time.Millisecond {
				return callerLimits{}, fmt.Errorf("-caller-per %q: want a duration of a millisecond or more, as 1m", *per)
			}
		}
		for p := range strings.SplitSeq(*proxies, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			prefix, err := netip.ParsePrefix(p)
			if err != nil {
				addr, aerr := netip.ParseAddr(p)
				if aerr != nil {
					return callerLimits{}, fmt.Errorf("-trusted-proxies: %q is neither an address nor a CIDR", p)
				}
				prefix = netip.PrefixFrom(addr, addr.BitLen())
			}
			l.TrustedProxies = append(l.TrustedProxies, prefix.Masked())
		}
		return l, nil
	}
}
