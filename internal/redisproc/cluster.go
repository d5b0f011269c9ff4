package redisproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CLIInstallHint says how to install redis-cli, which creates and
// reshards clusters; it is the text of ErrCLINotInstalled.
const CLIInstallHint = "redis-cli not found: install it with `apt-get install redis-tools` (Debian) or `brew install redis`"

// ErrCLINotInstalled is returned by StartCluster when redis-cli is not on
// PATH.
var ErrCLINotInstalled = errors.New(CLIInstallHint)

// ClusterTimeout bounds how long a cluster may take to form, and a
// resharding or a failover to settle.
const ClusterTimeout = 60 * time.Second

// ClusterOptions configures a cluster started by StartCluster. The zero
// value is three masters without replicas and without persistence.
type ClusterOptions struct {
	// Masters is the number of masters; zero means 3. redis-cli creates
	// clusters of three masters or more; one or two are joined here
	// with CLUSTER ADDSLOTSRANGE and CLUSTER MEET, without replicas.
	Masters int
	// Replicas is the number of replicas of each master (three masters
	// or more only).
	Replicas int
	// NodeTimeout is the cluster-node-timeout: how long a master must be
	// unreachable before its replica takes over. Zero means 2 seconds.
	NodeTimeout time.Duration
	// Dir holds a directory per node; empty means a new temporary
	// directory, removed by Close.
	Dir string
	// AppendOnly and AppendFsync are those of every node (see Options).
	AppendOnly  bool
	AppendFsync string
	// Args are extra command-line arguments of every node.
	Args []string
	// TLS, when set, has every node listen on TLS too, on a port of its
	// own (Cluster.TLSAddrs), with these files: its cluster bus and its
	// replication are TLS, and the addresses it announces (CLUSTER
	// SLOTS, MOVED) are 127.0.0.1 and its TLS port (tls-cluster), so a
	// client that dials one node over TLS reaches the others over TLS.
	// Clients need no certificate of their own. The package's own
	// connections use the plain ports, which stay open.
	TLS *TLS
}

// Cluster is a Redis Cluster of local redis-server processes, each on a
// free loopback port with its cluster bus on another. Its methods are
// safe for concurrent use.
type Cluster struct {
	// Nodes are the servers in the order they were started: the first
	// Masters of them were created masters, the others replicas.
	Nodes []*Server
	// TLSAddrs are the addresses of the nodes' TLS ports, in the order
	// of Nodes, with ClusterOptions.TLS; nil without.
	TLSAddrs []string
	cli      string
	dir      string
	ownsDir  bool
}

// StartCluster starts the nodes of a cluster, waits until each answers
// PING, joins them with redis-cli --cluster create (slots spread evenly
// over the masters) and waits until every node reports cluster_state:ok,
// knows every other and agrees with them on which master serves which
// slots, and every replica is in sync with its master. A join that could
// not reach a node is made again, from nodes reset, up to createAttempts
// times in all. It returns an error wrapping ErrNotInstalled or
// ErrCLINotInstalled when a binary is missing.
func StartCluster(opts ClusterOptions) (*Cluster, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, ErrNotInstalled
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, ErrCLINotInstalled
	}
	if opts.Masters <= 0 {
		opts.Masters = 3
	}
	if opts.Masters < 3 && opts.Replicas > 0 {
		return nil, fmt.Errorf("redisproc: a cluster of %d masters cannot have replicas here (redis-cli wants three masters)", opts.Masters)
	}
	if opts.NodeTimeout <= 0 {
		opts.NodeTimeout = 2 * time.Second
	}
	c := &Cluster{cli: cli, dir: opts.Dir}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "redisproc-cluster-"); err != nil {
			return nil, fmt.Errorf("redisproc: make a directory: %w", err)
		}
		c.ownsDir = true
	}
	n := opts.Masters * (1 + opts.Replicas)
	for i := range n {
		dir := filepath.Join(c.dir, "node-"+strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			c.Close()
			return nil, fmt.Errorf("redisproc: make a directory: %w", err)
		}
		args := []string{"--cluster-node-timeout", strconv.FormatInt(opts.NodeTimeout.Milliseconds(), 10)}
		if opts.TLS != nil {
			port, err := FreePort()
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("redisproc: find a free port: %w", err)
			}
			args = append(args, opts.TLS.clusterArgs(port)...)
			c.TLSAddrs = append(c.TLSAddrs, "127.0.0.1:"+strconv.Itoa(port))
		}
		args = append(args, opts.Args...)
		s, err := Start(Options{Dir: dir, ClusterBus: true, AppendOnly: opts.AppendOnly, AppendFsync: opts.AppendFsync, Args: args})
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Nodes = append(c.Nodes, s)
	}
	if err := c.join(opts); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.WaitOK(); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.waitReplicas(opts.Masters * opts.Replicas); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// createAttempts bounds how many times StartCluster joins its nodes.
const createAttempts = 3

// errUnreachable marks an error of a join that could not reach a node.
var errUnreachable = errors.New("a node could not be reached")

// join joins the nodes once each answers PING (see create). A join that
// fails because a node could not be reached is made again, after the
// nodes are reset (see reset), up to createAttempts times in all.
func (c *Cluster) join(opts ClusterOptions) error {
	for attempt := 1; ; attempt++ {
		if err := c.waitNodes(); err != nil {
			return err
		}
		err := c.create(opts)
		if err == nil || attempt == createAttempts || !errors.Is(err, errUnreachable) {
			return err
		}
		if rerr := c.reset(); rerr != nil {
			return fmt.Errorf("%w; resetting the nodes to join them again: %w", err, rerr)
		}
	}
}

// waitNodes waits until every node answers PING, each within
// StartTimeout, and fails at once for a node whose process has exited.
func (c *Cluster) waitNodes() error {
	for _, s := range c.Nodes {
		deadline := time.Now().Add(StartTimeout)
		for {
			err := Ping(s.Addr())
			if err == nil {
				break
			}
			if !s.Running() {
				return fmt.Errorf("redisproc: cluster node %s has exited: %s", s.Addr(), s.LogTail(10))
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("redisproc: cluster node %s did not answer PING within %v: %w", s.Addr(), StartTimeout, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// reset makes every node an empty master that knows no other (CLUSTER
// RESET HARD: no slots, a new node id, epochs back to 0), as a node is
// before a join, and waits until each knows itself alone, so that a
// node that had not yet forgotten another one does not teach it back.
func (c *Cluster) reset() error {
	deadline := time.Now().Add(ClusterTimeout)
	for {
		alone := 0
		for _, s := range c.Nodes {
			if _, err := Do(s.Addr(), "CLUSTER", "RESET", "HARD"); err != nil {
				return fmt.Errorf("redisproc: CLUSTER RESET HARD on %s: %w", s.Addr(), err)
			}
		}
		for _, s := range c.Nodes {
			info, err := DoString(s.Addr(), "CLUSTER", "INFO")
			if err == nil && infoField(info, "cluster_known_nodes") == "1" {
				alone++
			}
		}
		if alone == len(c.Nodes) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redisproc: %d of %d cluster nodes still know others after a reset", len(c.Nodes)-alone, len(c.Nodes))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// create joins the nodes: with redis-cli --cluster create when there are
// three masters or more, by hand otherwise. Its error wraps
// errUnreachable when a node could not be reached.
func (c *Cluster) create(opts ClusterOptions) error {
	if opts.Masters >= 3 {
		args := append([]string{"--cluster", "create"}, c.Addrs()...)
		args = append(args, "--cluster-replicas", strconv.Itoa(opts.Replicas), "--cluster-yes")
		if out, err := exec.Command(c.cli, args...).CombinedOutput(); err != nil {
			if cliUnreachable(string(out)) {
				err = fmt.Errorf("%w: %w", errUnreachable, err)
			}
			return fmt.Errorf("redisproc: redis-cli --cluster create: %w: %s", err, tail(string(out), 10))
		}
		return nil
	}
	for i, s := range c.Nodes {
		lo, hi := i*16384/len(c.Nodes), (i+1)*16384/len(c.Nodes)-1
		for _, cmd := range [][]string{
			{"CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i + 1)},
			{"CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi)},
			{"CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(c.Nodes[0].Port()), strconv.Itoa(c.Nodes[0].BusPort())},
		} {
			if i == 0 && cmd[1] == "MEET" {
				continue
			}
			if _, err := Do(s.Addr(), cmd...); err != nil {
				var re ReplyError
				if !errors.As(err, &re) {
					err = fmt.Errorf("%w: %w", errUnreachable, err)
				}
				return fmt.Errorf("redisproc: %s on %s: %w", strings.Join(cmd, " "), s.Addr(), err)
			}
		}
	}
	return nil
}

// cliUnreachable reports whether out, what redis-cli printed, says that
// it could not connect to a node or lost its connection to one.
func cliUnreachable(out string) bool {
	for _, s := range []string{"Could not connect", "Connection refused", "Connection reset", "I/O error"} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

// waitReplicas waits until n nodes are replicas in sync with their
// master, and every node knows them as replicas.
func (c *Cluster) waitReplicas(n int) error {
	deadline := time.Now().Add(ClusterTimeout)
	for {
		synced, known := 0, n
		for _, s := range c.Nodes {
			info, err := DoString(s.Addr(), "INFO", "replication")
			if err == nil && infoField(info, "role") == "slave" && infoField(info, "master_link_status") == "up" {
				synced++
			}
			text, err := DoString(s.Addr(), "CLUSTER", "NODES")
			seen := 0
			for _, node := range parseClusterNodes(text) {
				if err == nil && node.MasterID != "" && !node.Failed {
					seen++
				}
			}
			known = min(known, seen)
		}
		if synced >= n && known >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redisproc: %d of %d replicas in sync after %v", synced, n, ClusterTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Addrs returns the host:port of every node, in the order of Nodes.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		addrs[i] = s.Addr()
	}
	return addrs
}

// URL returns the cluster's address list as a redis:// URL of the form
// rueidis.ParseURL reads and REDIS_URL takes:
// redis://host:port?addr=host:port&addr=host:port...
func (c *Cluster) URL() string {
	addrs := c.Addrs()
	var b strings.Builder
	b.WriteString("redis://" + addrs[0])
	for i, a := range addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		b.WriteString(sep + "addr=" + a)
	}
	return b.String()
}

// Node returns the node listening on addr, or nil.
func (c *Cluster) Node(addr string) *Server {
	for _, s := range c.Nodes {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// ClusterNode is one line of CLUSTER NODES.
type ClusterNode struct {
	ID, Addr string
	// Master is set for a master; MasterID names a replica's master.
	Master   bool
	MasterID string
	// Failed is set for a node marked fail (or fail?) by the node asked.
	Failed bool
	// Slots is the number of slots the node serves, in Ranges (first
	// and last slot of each range).
	Slots  int
	Ranges [][2]int
}

// Serves reports whether slot is in one of n's ranges.
func (n ClusterNode) Serves(slot int) bool {
	for _, r := range n.Ranges {
		if r[0] <= slot && slot <= r[1] {
			return true
		}
	}
	return false
}

// Topology returns CLUSTER NODES as a running node sees it.
func (c *Cluster) Topology() ([]ClusterNode, error) {
	var lastErr error
	for _, s := range c.Nodes {
		if !s.Running() {
			continue
		}
		text, err := DoString(s.Addr(), "CLUSTER", "NODES")
		if err != nil {
			lastErr = err
			continue
		}
		return parseClusterNodes(text), nil
	}
	return nil, fmt.Errorf("redisproc: no node answers CLUSTER NODES: %v", lastErr)
}

// parseClusterNodes reads the text of CLUSTER NODES.
func parseClusterNodes(text string) []ClusterNode {
	var nodes []ClusterNode
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := ClusterNode{ID: f[0], Addr: addr, Master: strings.Contains(f[2], "master"),
			Failed: strings.Contains(f[2], "fail")}
		if f[3] != "-" {
			n.MasterID = f[3]
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, isRange := strings.Cut(r, "-")
			if !isRange {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil && a <= b {
				n.Slots += b - a + 1
				n.Ranges = append(n.Ranges, [2]int{a, b})
			}
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// Masters returns the masters that serve slots, as a running node sees
// them.
func (c *Cluster) Masters() ([]ClusterNode, error) {
	nodes, err := c.Topology()
	if err != nil {
		return nil, err
	}
	var masters []ClusterNode
	for _, n := range nodes {
		if n.Master && !n.Failed && n.Slots > 0 {
			masters = append(masters, n)
		}
	}
	return masters, nil
}

// WaitOK waits until every running node reports cluster_state:ok, knows
// as many nodes as are running and agrees with the others on which
// master serves each of the 16384 slots, failing after ClusterTimeout.
func (c *Cluster) WaitOK() error {
	deadline := time.Now().Add(ClusterTimeout)
	for {
		err := c.checkOK()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redisproc: cluster not ready within %v: %w", ClusterTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) checkOK() error {
	running, want := 0, ""
	for _, s := range c.Nodes {
		if s.Running() {
			running++
		}
	}
	for _, s := range c.Nodes {
		if !s.Running() {
			continue
		}
		info, err := DoString(s.Addr(), "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("node %s: %w", s.Addr(), err)
		}
		if st := infoField(info, "cluster_state"); st != "ok" {
			return fmt.Errorf("node %s: cluster_state %q", s.Addr(), st)
		}
		text, err := DoString(s.Addr(), "CLUSTER", "NODES")
		if err != nil {
			return fmt.Errorf("node %s: %w", s.Addr(), err)
		}
		var masters []string
		total, healthy := 0, 0
		for _, n := range parseClusterNodes(text) {
			if !n.Failed {
				healthy++
			}
			if n.Master && !n.Failed && n.Slots > 0 {
				masters = append(masters, n.Addr+"="+rangesText(n.Ranges))
				total += n.Slots
			}
		}
		if healthy < running {
			return fmt.Errorf("node %s knows %d healthy nodes of %d running", s.Addr(), healthy, running)
		}
		if total != 16384 {
			return fmt.Errorf("node %s: masters serve %d slots", s.Addr(), total)
		}
		slices.Sort(masters)
		view := strings.Join(masters, ",")
		if want == "" {
			want = view
		} else if view != want {
			return fmt.Errorf("nodes disagree on the masters: %s and %s", want, view)
		}
	}
	return nil
}

// rangesText writes slot ranges as CLUSTER NODES does, in order.
func rangesText(ranges [][2]int) string {
	ranges = slices.Clone(ranges)
	slices.SortFunc(ranges, func(a, b [2]int) int { return a[0] - b[0] })
	parts := make([]string, len(ranges))
	for i, r := range ranges {
		parts[i] = strconv.Itoa(r[0])
		if r[1] != r[0] {
			parts[i] += "-" + strconv.Itoa(r[1])
		}
	}
	return strings.Join(parts, " ")
}

// Reshard moves slots slots from the master with id from to the one with
// id to with redis-cli --cluster reshard, keys and all, while the cluster
// keeps serving: clients meanwhile get ASK and MOVED redirections and
// TRYAGAIN for commands on several keys of a slot in the middle of its
// move. It waits until the cluster agrees on the new layout.
func (c *Cluster) Reshard(from, to string, slots int) error {
	var entry string
	for _, s := range c.Nodes {
		if s.Running() {
			entry = s.Addr()
			break
		}
	}
	out, err := exec.Command(c.cli, "--cluster", "reshard", entry,
		"--cluster-from", from, "--cluster-to", to, "--cluster-slots", strconv.Itoa(slots),
		"--cluster-yes", "--cluster-pipeline", "100").CombinedOutput()
	if err != nil {
		return fmt.Errorf("redisproc: redis-cli --cluster reshard: %w: %s", err, tail(string(out), 10))
	}
	return c.WaitOK()
}

// SlotOf returns the hash slot of key, as the cluster computes it.
func (c *Cluster) SlotOf(key string) (int, error) {
	for _, s := range c.Nodes {
		if !s.Running() {
			continue
		}
		n, err := Do(s.Addr(), "CLUSTER", "KEYSLOT", key)
		if err != nil {
			return 0, err
		}
		return int(n.(int64)), nil
	}
	return 0, errors.New("redisproc: no node running")
}

// Owner returns the master that serves slot, as a running node sees it.
func (c *Cluster) Owner(slot int) (ClusterNode, error) {
	nodes, err := c.Topology()
	if err != nil {
		return ClusterNode{}, err
	}
	for _, n := range nodes {
		if n.Master && !n.Failed && n.Serves(slot) {
			return n, nil
		}
	}
	return ClusterNode{}, fmt.Errorf("redisproc: no master serves slot %d", slot)
}

// MoveSlot moves slot to the master with id to as redis-cli --cluster
// reshard would (IMPORTING and MIGRATING states, MIGRATE of its keys,
// then SETSLOT NODE on every master), but stops half way: with the slot
// open on both nodes and half of its keys moved, it calls hold, and
// finishes the move when hold returns. Meanwhile, commands on keys of the
// slot get ASK redirections to the new master, and scripts and other
// commands on several keys of the slot, some moved or missing, get
// TRYAGAIN.
func (c *Cluster) MoveSlot(slot int, to string, hold func()) error {
	from, err := c.Owner(slot)
	if err != nil {
		return err
	}
	if from.ID == to {
		return fmt.Errorf("redisproc: slot %d is already on %s", slot, to)
	}
	nodes, err := c.Topology()
	if err != nil {
		return err
	}
	var target ClusterNode
	for _, n := range nodes {
		if n.ID == to {
			target = n
		}
	}
	if target.Addr == "" {
		return fmt.Errorf("redisproc: no node %s", to)
	}
	sl := strconv.Itoa(slot)
	if _, err := Do(target.Addr, "CLUSTER", "SETSLOT", sl, "IMPORTING", from.ID); err != nil {
		return fmt.Errorf("redisproc: SETSLOT IMPORTING: %w", err)
	}
	if _, err := Do(from.Addr, "CLUSTER", "SETSLOT", sl, "MIGRATING", to); err != nil {
		return fmt.Errorf("redisproc: SETSLOT MIGRATING: %w", err)
	}
	host, port, _ := strings.Cut(target.Addr, ":")
	migrate := func(limit int) error {
		for {
			reply, err := Do(from.Addr, "CLUSTER", "GETKEYSINSLOT", sl, strconv.Itoa(max(limit, 1)))
			if err != nil {
				return err
			}
			keys, _ := reply.([]any)
			if len(keys) == 0 {
				return nil
			}
			args := []string{"MIGRATE", host, port, "", "0", "5000", "KEYS"}
			for _, k := range keys {
				args = append(args, k.(string))
			}
			if _, err := Do(from.Addr, args...); err != nil {
				return fmt.Errorf("redisproc: MIGRATE: %w", err)
			}
			if limit > 0 {
				return nil
			}
		}
	}
	count, err := Do(from.Addr, "CLUSTER", "COUNTKEYSINSLOT", sl)
	if err != nil {
		return err
	}
	if err := migrate(int(count.(int64)) / 2); err != nil {
		return err
	}
	hold()
	if err := migrate(0); err != nil {
		return err
	}
	for _, n := range append([]ClusterNode{target, from}, nodes...) {
		if !n.Master || n.Failed {
			continue
		}
		if _, err := Do(n.Addr, "CLUSTER", "SETSLOT", sl, "NODE", to); err != nil {
			return fmt.Errorf("redisproc: SETSLOT NODE on %s: %w", n.Addr, err)
		}
	}
	return c.WaitOK()
}

// Close kills every node and removes the cluster's directory if
// StartCluster made it.
func (c *Cluster) Close() {
	for _, s := range c.Nodes {
		s.Close()
	}
	if c.ownsDir {
		_ = os.RemoveAll(c.dir)
	}
}

// tail returns the last n lines of text.
func tail(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
