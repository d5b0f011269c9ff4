package redisbackend

import (
	"context"
	"crypto/sha1"
	"embed"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/redis/rueidis"
)

// The Lua scripts of the backend live in the directory lua, one file per
// script, each opening with a comment that gives its KEYS, its ARGV and
// what it returns. Code that several scripts share (the server's clock,
// recording events, releasing a lease, scheduling a task, pruning the
// dead-letter set) lives once, as a fragment in lua/lib, and a script
// takes it in with a line of its own:
//
//	--@include lib/clock.lua
//
// loadScript replaces that line with the fragment's text, its own
// includes expanded first; a fragment included a second time, directly or
// through another, is left out, since it is in already. Lines that hold
// only a comment are dropped from what Redis gets, so that documenting a
// script costs nothing to send or run.
//
// A script that writes and could answer from what a server lacks (a task
// not found, a lease no longer held) opens with a shebang, "#!lua" (a
// script with flags, Redis 7): a read-only replica refuses it (READONLY)
// before it runs. After a failover the old primary comes back on its
// address as a replica, empty until it has synced, and a client that has
// not yet followed the failover still reaches it: without the shebang, it
// would answer "not found" or "lease lost" for a live task, and the worker
// would act on that on the new primary (see append.lua and
// TestLeaseScriptsOnAReplicaAreRefused). ack.lua, which only frees
// memory, also says flags=allow-oom: a full Redis still takes the
// acknowledgements that make room. fetch.lua opens with one too, so that
// a full Redis refuses it whole rather than lease tasks whose runs could
// record nothing; snapshot.lua, which only reads, says flags=no-writes,
// which a full Redis runs (see Snapshot).
//
//go:embed lua
var luaFiles embed.FS

// includeDirective starts a line that includes a fragment.
const includeDirective = "--@include "

// A script is one of the backend's Lua scripts, as Redis runs it: its
// source with the fragments it includes, and the source's SHA-1, with
// which EVALSHA names it.
type script struct {
	name, src, sha string
}

// mustLoadScript loads the script in lua/<name>. It panics if the file or
// a fragment it includes is missing: the files are embedded, so that
// happens on every start or never, and the tests load every script.
func mustLoadScript(name string) *script {
	s, err := loadScript(name)
	if err != nil {
		panic(err)
	}
	return s
}

// loadScript loads the script in lua/<name> (see mustLoadScript).
func loadScript(name string) (*script, error) {
	var b strings.Builder
	if err := expand(&b, name, map[string]bool{}); err != nil {
		return nil, fmt.Errorf("redisbackend: script %s: %w", name, err)
	}
	src := b.String()
	sum := sha1.Sum([]byte(src))
	return &script{name: name, src: src, sha: hex.EncodeToString(sum[:])}, nil
}

// expand writes the code of lua/<name> to b, with its includes expanded
// and its comment lines left out; seen holds the files written already.
func expand(b *strings.Builder, name string, seen map[string]bool) error {
	if seen[name] {
		return nil
	}
	seen[name] = true
	text, err := luaFiles.ReadFile("lua/" + name)
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(text)) {
		if inc, ok := strings.CutPrefix(line, includeDirective); ok {
			if err := expand(b, strings.TrimSpace(inc), seen); err != nil {
				return fmt.Errorf("included by %s: %w", name, err)
			}
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		b.WriteString(line)
		if !strings.HasSuffix(line, "\n") {
			b.WriteByte('\n')
		}
	}
	return nil
}

// The scripts, loaded once.
var (
	appendScript      = mustLoadScript("append.lua")
	createScript      = mustLoadScript("create.lua")
	createTaskScript  = mustLoadScript("create_task.lua")
	enqueueScript     = mustLoadScript("enqueue.lua")
	fetchScript       = mustLoadScript("fetch.lua")
	extendScript      = mustLoadScript("extend.lua")
	retryScript       = mustLoadScript("retry.lua")
	endAttemptScript  = mustLoadScript("end_attempt.lua")
	noRunScript       = mustLoadScript("no_run.lua")
	ackScript         = mustLoadScript("ack.lua")
	finishScript      = mustLoadScript("finish.lua")
	buryScript        = mustLoadScript("bury.lua")
	deadScript        = mustLoadScript("dead.lua")
	requeueScript     = mustLoadScript("requeue.lua")
	cancelScript      = mustLoadScript("cancel.lua")
	readyScript       = mustLoadScript("ready.lua")
	retireScript      = mustLoadScript("retire.lua")
	heartbeatScript   = mustLoadScript("heartbeat.lua")
	checkpointScript  = mustLoadScript("checkpoint.lua")
	admitScript       = mustLoadScript("admit.lua")
	callerAdmitScript = mustLoadScript("caller_admit.lua")
	endCutScript      = mustLoadScript("end_cut.lua")
	dropOrphanScript  = mustLoadScript("drop_orphan.lua")
	snapshotScript    = mustLoadScript("snapshot.lua")
)

// evalsha returns the command that runs s by its SHA-1.
func (s *script) evalsha(c rueidis.CommandClient, keys, args []string) rueidis.Completed {
	return c.B().Evalsha().Sha1(s.sha).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
}

// eval returns the command that runs s sent whole.
func (s *script) eval(c rueidis.CommandClient, keys, args []string) rueidis.Completed {
	return c.B().Eval().Script(s.src).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
}

// exec runs s by its SHA-1 and, only when Redis does not have it (a
// restart, SCRIPT FLUSH), sends it whole in a second round trip: nothing
// ran the first time, so running it then cannot do anything twice.
func (s *script) exec(ctx context.Context, c rueidis.CommandClient, keys, args []string) rueidis.RedisResult {
	res := c.Do(ctx, s.evalsha(c, keys, args))
	if noScript(res.Error()) {
		res = c.Do(ctx, s.eval(c, keys, args))
	}
	return res
}

// noScript reports whether err is Redis's answer to an EVALSHA of a script
// it does not have.
func noScript(err error) bool {
	re, isReply := rueidis.IsRedisErr(err)
	return isReply && re.IsNoScript()
}
