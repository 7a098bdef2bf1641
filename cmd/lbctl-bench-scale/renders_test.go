package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestListedMarksTheServerLinesInstances(t *testing.T) {
	conf := "upstream svc-0000 {\n    server 127.0.0.1:20000;\n    server 127.0.0.1:20003;\n}\nupstream svc-0001 {\n    server 127.0.0.1:20019;\n}\n"
	up := listed(conf, 2)
	var got []int
	for i, ok := range up {
		if ok {
			got = append(got, firstPort+i)
		}
	}
	if want := []int{20000, 20003, 20019}; !slices.Equal(got, want) {
		t.Fatalf("listed ports %v, want %v", got, want)
	}
}

// A file renamed over the output is a version, read once; a rename of
// another file in the directory is none.
func TestRendersRecordsEachRenameOverTheFile(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "all.conf")
	r := watchRenders(t, dest, 1)
	defer r.close()
	put := func(name, conf string) {
		tmp := filepath.Join(dir, "tmp")
		if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	before := time.Now()
	put("other.conf", "server 127.0.0.1:20001;\n")
	put("all.conf", "server 127.0.0.1:20002;\n")
	if !waitFor(r.changed, nil, 5*time.Second, r.any) {
		t.Fatal("no version recorded")
	}
	v := r.soFar()
	if len(v) != 1 || !v[0].up[2] || v[0].up[1] || v[0].at.Before(before) {
		t.Fatalf("versions %+v, want one listing instance 2", v)
	}
	chg := []change{{port: firstPort + 2, before: before}, {port: firstPort + 2, down: true, before: before}}
	outs := matchRendered(chg, v)
	if outs[0].rendered != v[0].at || outs[1].seen() {
		t.Fatalf("outcomes %+v: want the instance's coming up rendered, its going down not", outs)
	}
}
