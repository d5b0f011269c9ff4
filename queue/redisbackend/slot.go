package redisbackend

import "strings"

// slotCount is the number of hash slots of a Redis Cluster.
const slotCount = 16384

// keySlot returns the Redis Cluster hash slot of a key or shard channel:
// CRC16 (XMODEM) of its hash tag, the text between its first '{' and the
// next '}' when that is not empty, or of the whole name otherwise, modulo
// slotCount.
func keySlot(name string) uint16 {
	if i := strings.IndexByte(name, '{'); i >= 0 {
		if j := strings.IndexByte(name[i+1:], '}'); j > 0 {
			name = name[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(name); i++ {
		crc ^= uint16(name[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % slotCount
}
