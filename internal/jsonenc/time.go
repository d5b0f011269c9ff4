package jsonenc

import "time"

// AppendTime appends t as a JSON string, as json.Marshal writes a
// time.Time: RFC 3339 with the nanoseconds the time has (trailing zeros
// dropped) and its zone's offset, "Z" for none. A task's every event and
// every SSE update carries a time, so it is written here by arithmetic on
// the Unix time and a table of digit pairs: about 430 instructions a
// time, where time.Time.AppendFormat spent about 900. A time whose
// year is outside 0-9999, or whose zone is a hundred hours or more away,
// is left to AppendFormat (json.Marshal refuses such a time; this writes
// it as AppendFormat does).
func AppendTime(buf []byte, t time.Time) []byte {
	_, offset := t.Zone()
	unix := t.Unix()
	if unix < minUnix || unix > maxUnix || offset <= -100*3600 || offset >= 100*3600 {
		return appendFormatted(buf, t)
	}
	sec := unix + int64(offset)
	days := sec / secondsPerDay
	if sec%secondsPerDay < 0 {
		days--
	}
	clock := int(sec - days*secondsPerDay)
	year, month, day := civil(days)
	if year < 0 || year > 9999 {
		return appendFormatted(buf, t)
	}
	// Written into an array and appended at once: an append per field
	// cost as much as the arithmetic.
	var b [37]byte // "2006-01-02T15:04:05.999999999-07:00"
	b[0] = '"'
	putPair(b[1:], year/100)
	putPair(b[3:], year%100)
	b[5] = '-'
	putPair(b[6:], month)
	b[8] = '-'
	putPair(b[9:], day)
	b[11] = 'T'
	putPair(b[12:], clock/3600)
	b[14] = ':'
	putPair(b[15:], clock/60%60)
	b[17] = ':'
	putPair(b[18:], clock%60)
	n := 20
	if ns := t.Nanosecond(); ns != 0 {
		b[20] = '.'
		u := uint32(ns) // 1 to 999999999
		b[21] = byte('0' + u/1e8)
		u %= 1e8
		putPair(b[22:], int(u/1e6))
		putPair(b[24:], int(u/1e4%100))
		putPair(b[26:], int(u/100%100))
		putPair(b[28:], int(u%100))
		n = 30
		for b[n-1] == '0' {
			n--
		}
	}
	if offset == 0 {
		b[n], b[n+1] = 'Z', '"'
		return append(buf, b[:n+2]...)
	}
	zone := offset / 60 // minutes, seconds dropped as RFC 3339 does
	b[n] = '+'
	if zone < 0 {
		b[n], zone = '-', -zone
	}
	putPair(b[n+1:], zone/60)
	b[n+3] = ':'
	putPair(b[n+4:], zone%60)
	b[n+6] = '"'
	return append(buf, b[:n+7]...)
}

const secondsPerDay = 24 * 60 * 60

// minUnix and maxUnix bound the Unix times AppendTime writes itself:
// 0000-01-01 and 9999-12-31 UTC, widened by the largest offset it takes.
const (
	minUnix = -62167219200 - 100*3600
	maxUnix = 253402300799 + 100*3600
)

// appendFormatted appends t as a JSON string by time.Time.AppendFormat.
func appendFormatted(buf []byte, t time.Time) []byte {
	buf = append(buf, '"')
	buf = t.AppendFormat(buf, time.RFC3339Nano)
	return append(buf, '"')
}

// civil returns the proleptic Gregorian date of the day days after
// 1970-01-01 (before it when negative), by the method of Howard
// Hinnant's days_from_civil, inverted: the calendar counted in eras of
// 400 years from 0000-03-01, so that the leap day ends each year.
func civil(days int64) (year, month, day int) {
	z := days + 719468 // days since 0000-03-01
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097                                  // day of the era, 0 to 146096
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // year of the era, 0 to 399
	doy := doe - (365*yoe + yoe/4 - yoe/100)               // day of the year from March 1st, 0 to 365
	mp := (5*doy + 2) / 153                                // month from March, 0 to 11
	day = int(doy - (153*mp+2)/5 + 1)
	month = int(mp) + 3
	if month > 12 {
		month -= 12
	}
	year = int(yoe + era*400)
	if month <= 2 {
		year++
	}
	return year, month, day
}

// putPair writes n, 0 to 99, as two digits at the start of b.
func putPair(b []byte, n int) {
	b[0], b[1] = digitPairs[2*n], digitPairs[2*n+1]
}

// digitPairs holds the two digits of each number from 0 to 99.
const digitPairs = "00010203040506070809" +
	"10111213141516171819" +
	"20212223242526272829" +
	"30313233343536373839" +
	"40414243444546474849" +
	"50515253545556575859" +
	"60616263646566676869" +
	"70717273747576777879" +
	"80818283848586878889" +
	"90919293949596979899"
