package supervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadSupervisordINI: any supervisord.conf gives programs lbctl can
// run, or an error naming the file; never a panic (the library's own
// panics are recovered into errors).
func FuzzLoadSupervisordINI(f *testing.F) {
	for _, seed := range []string{sampleSupervisordINI("/tmp"), crashingINI, badINI,
		"[program:x]\ncommand=run\nnumprocs=2\nprocess_name=%(program_name)s_%(process_num)d\n",
		"[program-default]\nautorestart=false\n[program:y]\ncommand=sleep 1\ndepends_on=z\n[program:z]\ncommand=true\n",
		"[include]\nfiles=nothing-here-*.conf\n", "[program:]\n", "x=1\n", ""} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "supervisord.conf")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		programs, _, err := LoadSupervisordINI(path)
		if err != nil {
			if programs != nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q with %d programs: want no programs and an error naming %s", err, len(programs), path)
			}
			return
		}
		if _, err := FromConfigs(programs); err != nil {
			t.Fatalf("accepted programs lbctl cannot run: %v", err)
		}
	})
}
