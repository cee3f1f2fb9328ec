package gc

import (
	"encoding/binary"
	"strings"
	"testing"
)

// TestReadRecords: the keep sets go through a spool and come back whole,
// in order, across the reader's chunks, in an array of exactly their
// length; a spool that cannot be read back is an error, not a short set.
func TestReadRecords(t *testing.T) {
	tmp := newTempFiles(t.TempDir())
	defer tmp.closeAll()
	for _, n := range []int{0, 1, 4095, 4096, 4097, 10000} {
		s, err := newSpool(tmp, "keep-nar")
		if err != nil {
			t.Fatal(err)
		}
		var rec [narRefSize]byte
		for i := range n {
			putNarRef(rec[:], uint64(i)*0x9e3779b97f4a7c15, uint32(i))
			if err := s.write(rec[:]); err != nil {
				t.Fatal(err)
			}
		}
		got, err := readRecords(s, narRefSize, getNarRef)
		if err != nil {
			t.Fatalf("%d records: %v", n, err)
		}
		if len(got) != n || cap(got) != n {
			t.Fatalf("%d records: read %d (cap %d)", n, len(got), cap(got))
		}
		for i, r := range got {
			if r.kh() != uint64(i)*0x9e3779b97f4a7c15 || r.id != uint32(i) {
				t.Fatalf("%d records: record %d is %+v", n, i, r)
			}
		}
	}

	s, err := newSpool(tmp, "keep-drv")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.write(make([]byte, 8*100)); err != nil {
		t.Fatal(err)
	}
	if err := s.finish(); err != nil {
		t.Fatal(err)
	}
	s.f.Close() // the file is gone from under it
	if _, err := readRecords(s, 8, binary.BigEndian.Uint64); err == nil || !strings.Contains(err.Error(), "temporary file") {
		t.Fatalf("unreadable spool: %v", err)
	}
}
