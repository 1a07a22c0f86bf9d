package xapisim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// VHD (Microsoft Virtual Hard Disk) footer layout: the last 512 bytes of every VHD, and a
// copy at the start of dynamic ones.
const (
	vhdFooterSize   = 512
	vhdCookie       = "conectix"
	vhdTypeFixed    = 2
	vhdTypeDynamic  = 3
	vhdDynamicMagic = "cxsparse"
)

type vhdFooter struct {
	CurrentSize int64
	DiskType    uint32
}

// parseVHDFooter checks a footer's cookie and checksum and returns its sizes.
func parseVHDFooter(f []byte) (vhdFooter, error) {
	if len(f) != vhdFooterSize {
		return vhdFooter{}, fmt.Errorf("footer is %d bytes, want %d", len(f), vhdFooterSize)
	}
	if !bytes.Equal(f[0:8], []byte(vhdCookie)) {
		return vhdFooter{}, errors.New("no VHD footer cookie \"conectix\"")
	}
	if want, got := binary.BigEndian.Uint32(f[64:68]), vhdChecksum(f); want != got {
		return vhdFooter{}, fmt.Errorf("VHD footer checksum %08x, computed %08x", want, got)
	}
	return vhdFooter{
		CurrentSize: int64(binary.BigEndian.Uint64(f[48:56])),
		DiskType:    binary.BigEndian.Uint32(f[60:64]),
	}, nil
}

// vhdChecksum is the ones' complement of the byte sum of a footer, checksum field excluded.
func vhdChecksum(f []byte) uint32 {
	var sum uint32
	for i, b := range f {
		if i >= 64 && i < 68 {
			continue
		}
		sum += uint32(b)
	}
	return ^sum
}

// FixedVHD wraps raw disk data (a multiple of 512 bytes) into a fixed VHD image: the data
// followed by a valid footer. Tests and the dev cloud use it to make small template images.
func FixedVHD(data []byte) []byte {
	size := len(data)
	if rem := size % 512; rem != 0 {
		data = append(data, make([]byte, 512-rem)...)
		size = len(data)
	}
	f := make([]byte, vhdFooterSize)
	copy(f[0:8], vhdCookie)
	binary.BigEndian.PutUint32(f[8:12], 2)           // features: reserved bit set
	binary.BigEndian.PutUint32(f[12:16], 0x00010000) // format version 1.0
	binary.BigEndian.PutUint64(f[16:24], ^uint64(0)) // data offset: none for fixed disks
	binary.BigEndian.PutUint32(f[24:28], uint32(time.Now().Unix()-946684800))
	copy(f[28:32], "xsim")
	binary.BigEndian.PutUint32(f[32:36], 0x00010000)
	copy(f[36:40], "Wi2k")
	binary.BigEndian.PutUint64(f[40:48], uint64(size))
	binary.BigEndian.PutUint64(f[48:56], uint64(size))
	binary.BigEndian.PutUint32(f[56:60], chs(int64(size)))
	binary.BigEndian.PutUint32(f[60:64], vhdTypeFixed)
	copy(f[68:84], newUUIDBytes())
	binary.BigEndian.PutUint32(f[64:68], vhdChecksum(f))
	return append(append([]byte{}, data...), f...)
}

// chs is the VHD disk geometry (cylinders, heads, sectors per track) for a size.
func chs(size int64) uint32 {
	sectors := size / 512
	if sectors > 65535*16*255 {
		sectors = 65535 * 16 * 255
	}
	var spt, heads, cth int64
	if sectors >= 65535*16*63 {
		spt, heads = 255, 16
		cth = sectors / spt
	} else {
		spt = 17
		cth = sectors / spt
		heads = (cth + 1023) / 1024
		if heads < 4 {
			heads = 4
		}
		if cth >= heads*1024 || heads > 16 {
			spt, heads = 31, 16
			cth = sectors / spt
		}
		if cth >= heads*1024 {
			spt, heads = 63, 16
			cth = sectors / spt
		}
	}
	cyl := cth / heads
	return uint32(cyl)<<16 | uint32(heads)<<8 | uint32(spt)
}

func newUUIDBytes() []byte {
	u := uuid.New()
	return u[:]
}
