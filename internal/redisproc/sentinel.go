package redisproc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SentinelOptions configures the servers started by StartSentinel. The
// zero value is one primary, one replica and three sentinels with a
// quorum of two, without persistence.
type SentinelOptions struct {
	// Replicas is the number of replicas of the primary; zero means 1.
	Replicas int
	// Sentinels is the number of sentinels; zero means 3.
	Sentinels int
	// Quorum is how many sentinels must agree that the primary is down;
	// zero means a majority of Sentinels.
	Quorum int
	// MasterName is the name the sentinels monitor the primary under;
	// empty means "mymaster".
	MasterName string
	// DownAfter is how long the primary must be unreachable before a
	// sentinel considers it down (down-after-milliseconds); zero means
	// one second.
	DownAfter time.Duration
	// FailoverTimeout is the sentinels' failover-timeout; zero means ten
	// seconds.
	FailoverTimeout time.Duration
	// Dir holds a directory per server; empty means a new temporary
	// directory, removed by Close.
	Dir string
	// AppendOnly, AppendFsync and Args are those of the primary and the
	// replicas (see Options).
	AppendOnly  bool
	AppendFsync string
	Args        []string
	// TLS, when set, has every server, the sentinels too, listen on TLS
	// only and connect to the others over TLS (see Options.TLS).
	TLS *TLS
	// SentinelTLS, when set with TLS, are the sentinels' files in place of
	// TLS's: a certificate of their own (its CAFile must also hold the
	// CA of the primary's and the replicas' certificates, which the
	// sentinels check).
	SentinelTLS *TLS
}

// Sentinel is a primary, its replicas and the sentinels that monitor them,
// all local redis-server processes on free loopback ports. Its methods are
// safe for concurrent use.
type Sentinel struct {
	// Data are the primary and its replicas, the first being the primary
	// they started with; after a failover another is the primary.
	Data []*Server
	// Sentinels are the redis-server --sentinel processes.
	Sentinels  []*Server
	masterName string
	dir        string
	ownsDir    bool
}

// StartSentinel starts a primary, its replicas (replicaof the primary) and
// the sentinels, and waits until every replica is in sync and every
// sentinel knows the replicas and the other sentinels, so that a failover
// can happen. It returns an error wrapping ErrNotInstalled when
// redis-server is missing.
func StartSentinel(opts SentinelOptions) (*Sentinel, error) {
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.Sentinels <= 0 {
		opts.Sentinels = 3
	}
	if opts.Quorum <= 0 {
		opts.Quorum = opts.Sentinels/2 + 1
	}
	if opts.MasterName == "" {
		opts.MasterName = "mymaster"
	}
	if opts.DownAfter <= 0 {
		opts.DownAfter = time.Second
	}
	if opts.FailoverTimeout <= 0 {
		opts.FailoverTimeout = 10 * time.Second
	}
	s := &Sentinel{masterName: opts.MasterName, dir: opts.Dir}
	if s.dir == "" {
		var err error
		if s.dir, err = os.MkdirTemp("", "redisproc-sentinel-"); err != nil {
			return nil, fmt.Errorf("redisproc: make a directory: %w", err)
		}
		s.ownsDir = true
	}
	start := func(name string, o Options) (*Server, error) {
		o.Dir = filepath.Join(s.dir, name)
		if err := os.Mkdir(o.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("redisproc: make a directory: %w", err)
		}
		return Start(o)
	}
	data := Options{AppendOnly: opts.AppendOnly, AppendFsync: opts.AppendFsync, Args: opts.Args, TLS: opts.TLS}
	primary, err := start("primary", data)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.Data = append(s.Data, primary)
	for i := range opts.Replicas {
		o := data
		o.Args = append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.Port())}, data.Args...)
		r, err := start("replica-"+strconv.Itoa(i), o)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.Data = append(s.Data, r)
	}
	conf := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d %[3]d\n"+
		"sentinel down-after-milliseconds %[1]s %[4]d\n"+
		"sentinel failover-timeout %[1]s %[5]d\n"+
		"sentinel parallel-syncs %[1]s 1\n",
		opts.MasterName, primary.Port(), opts.Quorum, opts.DownAfter.Milliseconds(), opts.FailoverTimeout.Milliseconds())
	sentinelTLS := opts.TLS
	if opts.TLS != nil && opts.SentinelTLS != nil {
		sentinelTLS = opts.SentinelTLS
	}
	for i := range opts.Sentinels {
		sn, err := start("sentinel-"+strconv.Itoa(i), Options{Sentinel: true, Config: conf, TLS: sentinelTLS})
		if err != nil {
			s.Close()
			return nil, err
		}
		s.Sentinels = append(s.Sentinels, sn)
	}
	if err := s.waitReady(opts.Replicas); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// MasterName returns the name the sentinels monitor the primary under.
func (s *Sentinel) MasterName() string { return s.masterName }

// URL returns the sentinels' addresses and the master name as a
// redis:// URL of the form rueidis.ParseURL reads and REDIS_URL takes:
// redis://host:port?addr=host:port&addr=host:port&master_set=mymaster
// (rediss:// over TLS).
func (s *Sentinel) URL() string {
	var b strings.Builder
	b.WriteString(s.Sentinels[0].scheme() + "://" + s.Sentinels[0].Addr() + "?")
	for _, sn := range s.Sentinels[1:] {
		b.WriteString("addr=" + sn.Addr() + "&")
	}
	b.WriteString("master_set=" + s.masterName)
	return b.String()
}

// SentinelAddrs returns the sentinels' host:port.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.Sentinels))
	for i, sn := range s.Sentinels {
		addrs[i] = sn.Addr()
	}
	return addrs
}

// Node returns the data server listening on addr, or nil.
func (s *Sentinel) Node(addr string) *Server {
	for _, d := range s.Data {
		if d.Addr() == addr {
			return d
		}
	}
	return nil
}

// PrimaryAddr returns the primary's address as the first sentinel that
// answers reports it.
func (s *Sentinel) PrimaryAddr() (string, error) {
	var lastErr error
	for _, sn := range s.Sentinels {
		if !sn.Running() {
			continue
		}
		reply, err := sn.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.masterName)
		if err != nil {
			lastErr = err
			continue
		}
		hp, ok := reply.([]any)
		if !ok || len(hp) != 2 {
			lastErr = fmt.Errorf("unexpected reply %v", reply)
			continue
		}
		host, _ := hp[0].(string)
		port, _ := hp[1].(string)
		return net.JoinHostPort(host, port), nil
	}
	return "", fmt.Errorf("redisproc: no sentinel names the primary: %v", lastErr)
}

// Primary returns the data server the sentinels name as the primary.
func (s *Sentinel) Primary() (*Server, error) {
	addr, err := s.PrimaryAddr()
	if err != nil {
		return nil, err
	}
	if d := s.Node(addr); d != nil {
		return d, nil
	}
	return nil, fmt.Errorf("redisproc: the sentinels name %s, not one of ours", addr)
}

// WaitFailover waits until the sentinels name a primary other than old
// and that server says it is a master, failing after ClusterTimeout. It
// returns the new primary.
func (s *Sentinel) WaitFailover(old *Server) (*Server, error) {
	deadline := time.Now().Add(ClusterTimeout)
	for {
		p, err := s.Primary()
		if err == nil && p != old {
			var info string
			if info, err = p.DoString("INFO", "replication"); err == nil {
				if role := infoField(info, "role"); role == "master" {
					return p, nil
				}
				err = fmt.Errorf("%s is still a %s", p.Addr(), infoField(info, "role"))
			}
		} else if err == nil {
			err = errors.New("the sentinels still name the old primary")
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("redisproc: no failover within %v: %w%s", ClusterTimeout, err, s.events())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// events returns, a line for each sentinel, what its log says of the
// failover (see failoverEvents), for the error of a failover that did
// not come: a sentinel that a stalled host put in TILT acts on nothing
// for 30 s, and an election that failed is tried again only after twice
// the failover-timeout.
func (s *Sentinel) events() string {
	var b strings.Builder
	for _, sn := range s.Sentinels {
		text, err := os.ReadFile(filepath.Join(sn.dir, "redis.log"))
		events := failoverEvents(string(text))
		switch {
		case err != nil:
			events = []string{"(no log: " + err.Error() + ")"}
		case len(events) == 0:
			events = []string{"(no failover event)"}
		}
		fmt.Fprintf(&b, "\n  sentinel %s: %s", sn.Addr(), strings.Join(events, "; "))
	}
	return b.String()
}

// failoverEvents returns the lines of a sentinel's log that tell how a
// failover went (the primary found down, TILT, the attempts, their
// elections and aborts, the switch), each as its time and its event.
func failoverEvents(log string) []string {
	var events []string
	for _, line := range strings.Split(log, "\n") {
		// pid:role date month year time level event details...
		f := strings.Fields(line)
		if len(f) < 7 || (f[6][0] != '+' && f[6][0] != '-') {
			continue
		}
		switch name := f[6][1:]; {
		case name == "sdown", name == "odown", name == "tilt", name == "try-failover",
			name == "elected-leader", name == "selected-slave", name == "failover-end",
			name == "switch-master", strings.HasPrefix(name, "failover-abort"):
			events = append(events, f[4]+" "+strings.Join(f[6:], " "))
		}
	}
	return events
}

// Rejoin restarts old, a data server that was killed, as a replica of the
// primary the sentinels name, as an orchestrator aware of the sentinels
// does (restarted as it was, it would come back as an empty primary until
// the sentinels noticed it), and waits until it is in sync.
func (s *Sentinel) Rejoin(old *Server) error {
	primary, err := s.PrimaryAddr()
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(primary)
	if err != nil {
		return err
	}
	if err := old.RestartWith("--replicaof", host, port); err != nil {
		return err
	}
	deadline := time.Now().Add(ClusterTimeout)
	for {
		info, err := old.DoString("INFO", "replication")
		if err == nil && infoField(info, "master_link_status") == "up" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redisproc: %s not in sync with %s within %v: %v", old.Addr(), primary, ClusterTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitReady waits until each replica's link to the primary is up and each
// sentinel knows the replicas and the other sentinels.
func (s *Sentinel) waitReady(replicas int) error {
	deadline := time.Now().Add(ClusterTimeout)
	for {
		err := s.checkReady(replicas)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redisproc: sentinel setup not ready within %v: %w", ClusterTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Sentinel) checkReady(replicas int) error {
	for _, r := range s.Data[1:] {
		info, err := r.DoString("INFO", "replication")
		if err != nil {
			return err
		}
		if st := infoField(info, "master_link_status"); st != "up" {
			return fmt.Errorf("replica %s: master_link_status %q", r.Addr(), st)
		}
	}
	for _, sn := range s.Sentinels {
		reply, err := sn.Do("SENTINEL", "MASTER", s.masterName)
		if err != nil {
			return err
		}
		fields, _ := reply.([]any)
		m := map[string]string{}
		for i := 0; i+1 < len(fields); i += 2 {
			k, _ := fields[i].(string)
			v, _ := fields[i+1].(string)
			m[k] = v
		}
		if m["num-slaves"] != strconv.Itoa(replicas) || m["num-other-sentinels"] != strconv.Itoa(len(s.Sentinels)-1) {
			return fmt.Errorf("sentinel %s knows %s replicas and %s other sentinels", sn.Addr(), m["num-slaves"], m["num-other-sentinels"])
		}
	}
	return nil
}

// Close kills every server and removes the directory if StartSentinel
// made it.
func (s *Sentinel) Close() {
	for _, sn := range s.Sentinels {
		sn.Close()
	}
	for _, d := range s.Data {
		d.Close()
	}
	if s.ownsDir {
		_ = os.RemoveAll(s.dir)
	}
}
