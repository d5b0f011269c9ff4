package redisbackend

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestKeySlot(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		slot uint16
	}{
		{"foo", 12182},        // the example of the Redis Cluster specification
		{"123456789", 0x31c3}, // the check value of CRC16/XMODEM
		{"{user1000}.following", keySlot("user1000")},
		{"foo{}{bar}", keySlot("foo{}{bar}")},
		{"", 0},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.slot, keySlot(tt.name), tt.name)
	}
	assert.Equal(t, keySlot("{q:default}"), keySlot("flows:{q:default}:cancel"))
	assert.NotEqual(t, keySlot("foo{}{bar}"), keySlot("bar"), "an empty first tag hashes the whole name")

}
