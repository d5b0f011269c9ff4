package flows_test

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/flowsrun/flows/flow/lcflow/tavily"
)

// No Docker engine runs where the tests run, so the images are never
// built here. These tests check what can be checked without one: that the
// Dockerfile's go build, run as the Dockerfile runs it, makes static
// binaries that start; that its stages are what they claim; and that
// compose.yaml wires what it promises. CI (.ci/run) also checks
// compose.yaml against the Compose Specification's schema.

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
}

// stage is one FROM of a Dockerfile and its instructions.
type stage struct {
	name, image string
	body        []instruction
}

// readDockerfile parses the Dockerfile into its global ARG defaults and
// its stages.
func readDockerfile(t *testing.T) (args map[string]string, stages []stage) {
	t.Helper()
	f, err := os.Open("Dockerfile")
	require.NoError(t, err)
	defer f.Close()
	args = map[string]string{}
	var line strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if line.Len() == 0 && (text == "" || strings.HasPrefix(text, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(text, `\`); ok {
			line.WriteString(cont + " ")
			continue
		}
		line.WriteString(text)
		cmd, rest, _ := strings.Cut(line.String(), " ")
		line.Reset()
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(rest)}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			s := stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
		case len(stages) == 0 && in.cmd == "ARG":
			name, value, _ := strings.Cut(in.args, "=")
			args[name] = value
		case len(stages) > 0:
			stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, stages, "the Dockerfile has no FROM")
	return args, stages
}

// goBuildCommand returns the build stage's go build command (without its
// RUN flags) and the environment its ENV instructions set before it.
func goBuildCommand(t *testing.T, build stage) (command string, env []string) {
	t.Helper()
	for _, in := range build.body {
		switch in.cmd {
		case "ENV":
			for _, kv := range strings.Fields(in.args) {
				require.Contains(t, kv, "=", "ENV %s: write ENV KEY=value", in.args)
				env = append(env, kv)
			}
		case "RUN":
			fields := strings.Fields(in.args)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				fields = fields[1:] // --mount=type=cache,...
			}
			if len(fields) > 1 && fields[0] == "go" && fields[1] == "build" {
				return strings.Join(fields, " "), env
			}
		}
	}
	t.Fatalf("stage %s has no RUN go build", build.name)
	return "", nil
}

// copiedFrom returns, for a stage, the destinations of its COPY
// --from=<from> instructions by their source.
func copiedFrom(s stage, from string) map[string]string {
	out := map[string]string{}
	for _, in := range s.body {
		f := strings.Fields(in.args)
		if in.cmd == "COPY" && len(f) == 3 && f[0] == "--from="+from {
			out[f[1]] = f[2]
		}
	}
	return out
}

// goDirective returns the "go" line of a go.mod or go.work, as "1.25".
func goDirective(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "go "); ok {
			parts := strings.SplitN(v, ".", 3)
			require.GreaterOrEqual(t, len(parts), 2, "%s: go %s", path, v)
			return parts[0] + "." + parts[1]
		}
	}
	t.Fatalf("%s has no go line", path)
	return ""
}

// workspaceModules returns the go.mod files of the modules go.work uses.
func workspaceModules(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("go.work")
	require.NoError(t, err)
	var mods []string
	inUse := false
	for l := range strings.SplitSeq(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "use (":
			inUse = true
		case inUse && l == ")":
			inUse = false
		case inUse && l != "" && !strings.HasPrefix(l, "//"):
			mods = append(mods, filepath.Join(l, "go.mod"))
		case strings.HasPrefix(l, "use ") && !strings.HasSuffix(l, "("):
			mods = append(mods, filepath.Join(strings.TrimPrefix(l, "use "), "go.mod"))
		}
	}
	require.Contains(t, mods, "go.mod", "go.work uses the root module")
	require.Contains(t, mods, filepath.Join("examples", "go.mod"), "go.work uses the examples")
	return mods
}

// minorOf returns the minor version of a "1.N" version.
func minorOf(t *testing.T, v string) int {
	t.Helper()
	major, minor, ok := strings.Cut(v, ".")
	require.True(t, ok && major == "1", "version %q is not 1.N", v)
	n, err := strconv.Atoi(minor)
	require.NoError(t, err, "version %q", v)
	return n
}

// TestDockerfile checks the Dockerfile without a Docker engine: its Go
// image is new enough for every module; every file it copies exists; the
// final stages run a binary of the build stage as a non-root user on a
// base image without a shell or C library; and its go build, run here
// exactly as written (the output directory aside) with the stage's
// environment, on the build context .dockerignore leaves, makes static
// binaries that start.
func TestDockerfile(t *testing.T) {
	args, stages := readDockerfile(t)
	idx := slices.IndexFunc(stages, func(s stage) bool { return s.name == "build" })
	require.GreaterOrEqual(t, idx, 0, "the Dockerfile has no stage named build")
	build := stages[idx]

	t.Run("Go version", func(t *testing.T) {
		goVersion := args["GO_VERSION"]
		require.NotEmpty(t, goVersion, "ARG GO_VERSION=<1.N> before the first FROM")
		assert.Equal(t, "golang:${GO_VERSION}-bookworm", build.image)
		for _, f := range append([]string{"go.work"}, workspaceModules(t)...) {
			assert.GreaterOrEqual(t, minorOf(t, goVersion), minorOf(t, goDirective(t, f)),
				"GO_VERSION %s is older than the go line of %s", goVersion, f)
		}
	})

	t.Run("copied files exist", func(t *testing.T) {
		for _, in := range build.body {
			f := strings.Fields(in.args)
			if in.cmd != "COPY" || strings.HasPrefix(f[0], "--") {
				continue
			}
			for _, src := range f[:len(f)-1] {
				_, err := os.Stat(src)
				assert.NoError(t, err, "COPY %s", in.args)
			}
		}
	})

	binaries := map[string]string{} // the path in the build stage, by final stage
	for _, s := range stages {
		if s.name == "build" {
			continue
		}
		t.Run("stage "+s.name, func(t *testing.T) {
			assert.True(t, strings.HasPrefix(s.image, "gcr.io/distroless/static") || s.image == "scratch",
				"%s: a static base without shell or C library, got %s", s.name, s.image)
			var user, entrypoint string
			for _, in := range s.body {
				switch in.cmd {
				case "USER":
					user = in.args
				case "ENTRYPOINT":
					entrypoint = in.args
				}
			}
			name, _, _ := strings.Cut(user, ":")
			assert.NotContains(t, []string{"", "root", "0"}, name, "%s runs as root", s.name)
			copies := copiedFrom(s, "build")
			require.Len(t, copies, 1, "%s copies one binary from the build stage", s.name)
			for src, dst := range copies {
				assert.Equal(t, `["`+dst+`"]`, entrypoint, "%s runs the binary it copies", s.name)
				binaries[s.name] = src
			}
		})
	}
	require.Contains(t, binaries, "server")
	require.Contains(t, binaries, "worker")

	command, env := goBuildCommand(t, build)
	require.Contains(t, env, "CGO_ENABLED=0", "the build stage sets ENV CGO_ENABLED=0")
	require.Contains(t, command, " -o /out/ ", "the binaries go to /out/")
	out := t.TempDir()
	cmd := exec.Command("sh", "-c", strings.Replace(command, " -o /out/ ", " -o "+out+"/ ", 1))
	cmd.Dir = buildContext(t)
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	output, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s\n%s", command, output)
	t.Logf("%s: %v", command, time.Since(start).Round(time.Millisecond))

	for stageName, src := range binaries {
		t.Run("binary of "+stageName, func(t *testing.T) {
			dir, file := filepath.Split(src)
			require.Equal(t, "/out/", dir)
			path := filepath.Join(out, file)
			assertStatic(t, path)

			info, err := buildinfo.ReadFile(path)
			require.NoError(t, err)
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			assert.Equal(t, "0", settings["CGO_ENABLED"])
			assert.Equal(t, "true", settings["-trimpath"])
		})
	}

	t.Run("binaries start", func(t *testing.T) {
		// An empty environment: no REDIS_URL of the machine's.
		run := func(name string, args ...string) (int, string) {
			c := exec.Command(filepath.Join(out, name), args...)
			c.Env = []string{}
			var buf bytes.Buffer
			c.Stdout, c.Stderr = &buf, &buf
			err := c.Run()
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return exit.ExitCode(), buf.String()
			}
			require.NoError(t, err, "%s %v", name, args)
			return 0, buf.String()
		}
		code, text := run("server", "-h")
		assert.Equal(t, 0, code, text)
		assert.Contains(t, text, "-healthcheck")
		code, text = run("worker")
		assert.Equal(t, 2, code, text)
		assert.Contains(t, text, "REDIS_URL is not set")
	})
}

// buildContext copies the repository as docker build sends it, without
// what .dockerignore leaves out, to a temporary directory and returns it.
// It knows .dockerignore's plain patterns and globs, which match a path or
// any directory above it; the test fails on a pattern it does not know.
func buildContext(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(".dockerignore")
	require.NoError(t, err)
	var patterns []string
	for l := range strings.SplitSeq(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		require.False(t, strings.HasPrefix(l, "!") || strings.Contains(l, "**"),
			".dockerignore: %q needs a matcher this test does not have", l)
		patterns = append(patterns, strings.Trim(filepath.Clean(l), "/"))
	}
	ignored := func(rel string) bool {
		for p := rel; p != "."; p = filepath.Dir(p) {
			for _, pat := range patterns {
				if ok, _ := filepath.Match(pat, p); ok {
					return true
				}
			}
		}
		return false
	}
	dir := t.TempDir()
	err = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || path == "." {
			return err
		}
		if ignored(path) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(dir, path)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	require.NoError(t, err)
	require.NoDirExists(t, filepath.Join(dir, ".git"), ".dockerignore leaves out the history")
	return dir
}

// assertStatic checks that the ELF file at path needs no dynamic loader
// and no shared library.
func assertStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		assert.NotEqual(t, elf.PT_INTERP, p.Type, "%s asks for a dynamic loader", path)
	}
	libs, err := f.ImportedLibraries()
	require.NoError(t, err)
	assert.Empty(t, libs, "%s needs shared libraries", path)
}

// composeService is the part of a compose.yaml service these tests read.
type composeService struct {
	Build *struct {
		Context string `yaml:"context"`
		Target  string `yaml:"target"`
	} `yaml:"build"`
	Image       string             `yaml:"image"`
	Command     []string           `yaml:"command"`
	Environment map[string]*string `yaml:"environment"`
	Ports       []string           `yaml:"ports"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Deploy struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
	Profiles    []string `yaml:"profiles"`
	Volumes     []string `yaml:"volumes"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	StopGracePeriod string `yaml:"stop_grace_period"`
	ContainerName   string `yaml:"container_name"`
}

// flagValue returns the value after flag in a command, or "".
func flagValue(command []string, flag string) string {
	if i := slices.Index(command, flag); i >= 0 && i+1 < len(command) {
		return command[i+1]
	}
	return ""
}

// exampleFlowsEnv returns the variables the example flows read: those
// examples/llm's FromEnv picks the model by, and Tavily's.
func exampleFlowsEnv(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("examples", "llm", "env.go"))
	require.NoError(t, err)
	keys := []string{tavily.EnvAPIKey, tavily.EnvBaseURL}
	for _, m := range regexp.MustCompile(`\benv\("([A-Z0-9_]+)"\)`).FindAllSubmatch(src, -1) {
		keys = append(keys, string(m[1]))
	}
	require.Contains(t, keys, "GEMINI_API_KEY", "the pattern finds what FromEnv reads")
	return keys
}

// TestComposeFile checks that compose.yaml mirrors the platform flows
// replaces and keeps the README's promises: server and workers built from
// the Dockerfile's stages, sharing one Redis, queue and prefix; workers
// that scale and get longer than their grace period to stop; Redis with
// AOF (appendfsync everysec) on a volume; PostgreSQL under a profile,
// with DATABASE_URL passed to the server and the workers.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("compose.yaml")
	require.NoError(t, err)
	var file struct {
		Services map[string]composeService `yaml:"services"`
		Volumes  map[string]any            `yaml:"volumes"`
	}
	require.NoError(t, yaml.Unmarshal(b, &file))
	for _, name := range []string{"server", "worker", "redis", "postgres"} {
		require.Contains(t, file.Services, name)
	}
	_, stages := readDockerfile(t)
	server, worker, redis, postgres := file.Services["server"], file.Services["worker"], file.Services["redis"], file.Services["postgres"]

	// volumeAt returns the named volume mounted at dir.
	volumeAt := func(t *testing.T, s composeService, dir string) {
		t.Helper()
		for _, v := range s.Volumes {
			if name, target, _ := strings.Cut(v, ":"); target == dir {
				assert.Contains(t, file.Volumes, name, "volume %s is declared", name)
				return
			}
		}
		t.Errorf("no volume at %s: %q", dir, s.Volumes)
	}

	for _, name := range []string{"server", "worker"} {
		t.Run(name, func(t *testing.T) {
			s := file.Services[name]
			require.NotNil(t, s.Build)
			assert.Equal(t, ".", s.Build.Context, "built from the repository root")
			assert.True(t, slices.ContainsFunc(stages, func(st stage) bool { return st.name == s.Build.Target }),
				"target %q is a stage of the Dockerfile", s.Build.Target)
			assert.Equal(t, "redis://redis:6379/0", *s.Environment["REDIS_URL"])
			assert.Equal(t, server.Environment["FLOWS_QUEUE"], s.Environment["FLOWS_QUEUE"])
			assert.Equal(t, server.Environment["FLOWS_PREFIX"], s.Environment["FLOWS_PREFIX"])
			assert.Contains(t, s.Environment, "DATABASE_URL", "run history reads it")
			for _, key := range exampleFlowsEnv(t) {
				v, ok := s.Environment[key]
				assert.True(t, ok && v == nil, "%s is passed on from the shell", key)
			}
			assert.Equal(t, "service_healthy", s.DependsOn["redis"].Condition)
		})
	}

	t.Run("server runs no flows", func(t *testing.T) {
		assert.Equal(t, "0", flagValue(server.Command, "-workers"), "the web process runs no flows")
		assert.Len(t, server.Ports, 1)
	})
	t.Run("worker scales", func(t *testing.T) {
		assert.Empty(t, worker.ContainerName, "a fixed name stops --scale")
		assert.Empty(t, worker.Ports, "a fixed host port stops --scale")
		assert.GreaterOrEqual(t, worker.Deploy.Replicas, 2)
		grace, err := time.ParseDuration(flagValue(worker.Command, "-grace"))
		require.NoError(t, err, "the worker's -grace")
		stop, err := time.ParseDuration(worker.StopGracePeriod)
		require.NoError(t, err, "the worker's stop_grace_period")
		assert.Greater(t, stop, grace, "the worker is killed only after its flows had -grace to finish")
	})
	t.Run("redis", func(t *testing.T) {
		assert.Equal(t, "redis-server", redis.Command[0])
		assert.Equal(t, "yes", flagValue(redis.Command, "--appendonly"))
		assert.Equal(t, "everysec", flagValue(redis.Command, "--appendfsync"))
		assert.NotContains(t, redis.Command, "--maxmemory-policy", "noeviction, the default, is kept")
		volumeAt(t, redis, "/data")
		assert.NotNil(t, redis.Healthcheck)
		assert.Empty(t, redis.Ports, "not published: the host's 6379 is left alone")
	})
	t.Run("postgres", func(t *testing.T) {
		assert.Equal(t, []string{"postgres"}, postgres.Profiles, "started only with --profile postgres")
		volumeAt(t, postgres, "/var/lib/postgresql/data")
		assert.NotNil(t, postgres.Healthcheck)
		assert.Empty(t, postgres.Ports, "not published: the host's 5432 is left alone")
	})
}
