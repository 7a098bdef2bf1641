package reload

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindIncludesSkipsCommentsAndStrings(t *testing.T) {
	conf := `# include /commented.conf;
http {
    include mime.types;
    add_header X "include /not-a-directive.conf;";
    include "/etc/nginx/conf.d/*.conf"; include 'b c.conf';
}
`
	var got []string
	for _, inc := range findIncludes([]byte(conf)) {
		got = append(got, inc.pattern+"="+conf[inc.start:inc.end])
	}
	want := []string{`mime.types=include mime.types;`,
		`/etc/nginx/conf.d/*.conf=include "/etc/nginx/conf.d/*.conf";`, `b c.conf=include 'b c.conf';`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestShadowRewritesOnlyIncludesThatReachReplacedFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "nginx.conf", "events {}\nhttp {\n include mime.types;\n include conf.d/*.conf;\n include sites/main.conf;\n}\n")
	write(t, dir, "mime.types", "types {}\n")
	write(t, dir, "conf.d/a.conf", "# a\n")
	write(t, dir, "conf.d/.hidden.conf", "# hidden\n")
	write(t, dir, "conf.d/c.conf", "# c\n")
	write(t, dir, "sites/main.conf", "include nested.conf;\n")
	write(t, dir, "nested.conf", "include conf.d/c.conf;\n")
	shadows := filepath.Join(dir, "shadows")
	os.Mkdir(shadows, 0o755)
	n := 0
	s := &shadower{
		confDir: dir,
		replaced: map[string]string{
			filepath.Join(dir, "conf.d/b.conf"): "/cand/b.conf", // new file matched by the glob
			filepath.Join(dir, "conf.d/c.conf"): "/cand/c.conf",
		},
		written: map[string]string{},
		newPath: func(orig string) string { n++; return filepath.Join(shadows, filepath.Base(orig)) },
	}
	main, err := s.shadow(filepath.Join(dir, "nginx.conf"), 0)
	if err != nil {
		t.Fatal(err)
	}
	got := read(t, main)
	wantMain := "include mime.types;\n include \"" + filepath.Join(dir, "conf.d/a.conf") + "\"; include \"/cand/b.conf\"; include \"/cand/c.conf\"; \n include \"" +
		filepath.Join(shadows, "main.conf") + "\"; \n}"
	if !strings.Contains(got, wantMain) {
		t.Fatalf("shadow main:\n%s\nwant it to contain:\n%s", got, wantMain)
	}
	// sites/main.conf includes nested.conf: relative to the conf prefix, not to sites/.
	if got := read(t, filepath.Join(shadows, "nested.conf")); !strings.Contains(got, `include "/cand/c.conf";`) {
		t.Fatalf("nested shadow: %s", got)
	}
	if n != 3 {
		t.Fatalf("%d shadow files, want 3 (main, sites/main.conf, nested.conf)", n)
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// findIncludes never panics, and every span it returns is an include
// directive ending in ';' whose pattern is what the directive names.
func FuzzFindIncludes(f *testing.F) {
	f.Add("http { include conf.d/*.conf; }")
	f.Add("# include x;\ninclude 'a b';include \"c\\\"d\";")
	f.Add("include")
	f.Add("include a b; include ;")
	f.Fuzz(func(t *testing.T, conf string) {
		for _, inc := range findIncludes([]byte(conf)) {
			if inc.start < 0 || inc.end > len(conf) || inc.start >= inc.end {
				t.Fatalf("span %d-%d out of %d bytes", inc.start, inc.end, len(conf))
			}
			text := conf[inc.start:inc.end]
			if !strings.HasPrefix(text, "include") || !strings.HasSuffix(text, ";") {
				t.Fatalf("span %q is not an include directive", text)
			}
		}
	})
}
