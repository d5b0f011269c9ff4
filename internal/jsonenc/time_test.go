package jsonenc

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// zones are the locations the tests write times in: UTC, the machine's,
// and fixed offsets on both sides, with minutes and with seconds (which
// RFC 3339 drops), the widest AppendTime writes itself and beyond.
var zones = []*time.Location{
	time.UTC, time.Local,
	time.FixedZone("east", 5*3600+30*60), time.FixedZone("west", -(9*3600 + 30*60)),
	time.FixedZone("seconds", -(3600 + 15*60 + 7)), time.FixedZone("under a minute", -30),
	time.FixedZone("wide", 99*3600+59*60), time.FixedZone("too wide", -100*3600),
}

// formatted is what AppendTime must write: AppendFormat's RFC 3339 with
// nanoseconds, quoted.
func formatted(t time.Time) string { return `"` + t.Format(time.RFC3339Nano) + `"` }

func TestAppendTimeMatchesAppendFormat(t *testing.T) {
	times := []time.Time{
		{}, // year 1
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 1, time.UTC),
		time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1900, 2, 28, 12, 0, 0, 100, time.UTC),
		time.Date(2000, 2, 29, 12, 0, 0, 120000000, time.UTC),
		time.Date(2100, 3, 1, 0, 0, 0, 10, time.UTC),
		time.Date(2026, 12, 6, 2, 30, 0, 123456789, time.UTC),
		time.Now(),
		time.Unix(1<<62, 0), time.Unix(-1<<62, 0),
	}
	for _, tm := range times {
		for _, loc := range zones {
			in := tm.In(loc)
			if got, want := string(AppendTime(nil, in)), formatted(in); got != want {
				t.Errorf("AppendTime(%v) = %s, want %s", in, got, want)
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		in := time.Unix(r.Int64N(maxUnix-minUnix+1)+minUnix, r.Int64N(1e9))
		if r.IntN(4) == 0 {
			in = in.Truncate(time.Duration(r.IntN(10)) * time.Millisecond)
		}
		in = in.In(zones[r.IntN(len(zones))])
		if got, want := string(AppendTime(nil, in)), formatted(in); got != want {
			t.Fatalf("AppendTime(%v) = %s, want %s", in, got, want)
		}
	}
}

func TestAppendTimeMatchesMarshal(t *testing.T) {
	for _, in := range []time.Time{time.Now(), time.Now().UTC(), time.Date(2026, 12, 6, 2, 30, 0, 0, zones[3])} {
		want, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendTime([]byte("x"), in); string(got) != "x"+string(want) {
			t.Errorf("AppendTime(%v) = %s, want x%s", in, got, want)
		}
	}
}

func FuzzAppendTime(f *testing.F) {
	f.Add(int64(0), int64(0), 0)
	f.Add(int64(1_765_000_000), int64(123_000_000), 3)
	f.Fuzz(func(t *testing.T, sec, ns int64, zone int) {
		loc := zones[uint(zone)%uint(len(zones))]
		in := time.Unix(sec, ns).In(loc)
		if got, want := string(AppendTime(nil, in)), formatted(in); got != want {
			t.Fatalf("AppendTime(%v) = %s, want %s", in, got, want)
		}
	})
}

func BenchmarkAppendTime(b *testing.B) {
	now := time.Now()
	buf := make([]byte, 0, 64)
	b.Run("AppendTime", func(b *testing.B) {
		for b.Loop() {
			buf = AppendTime(buf[:0], now)
		}
	})
	b.Run("AppendFormat", func(b *testing.B) {
		for b.Loop() {
			buf = appendFormatted(buf[:0], now)
		}
	})
}
