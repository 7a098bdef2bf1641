package reload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/lbctl/lbctl/internal/atomicfile"
	"github.com/lbctl/lbctl/render"
)

// ErrRejected is what a candidate config that nginx -t refused wraps.
var ErrRejected = errors.New("rejected by nginx -t")

// ValidationError is nginx -t refusing a candidate config, pointed back at
// the live path and the template that produced the failing file.
type ValidationError struct {
	// Source is the template that rendered the file nginx complained about;
	// empty when the complaint is about a file lbctl did not render.
	Source string
	// Path is the live path of that file, Line the line in it (0 if unknown).
	Path string
	Line int
	// Output is nginx's message, with candidate paths replaced by live ones.
	Output string
}

func (e *ValidationError) Error() string {
	where := e.Path
	if e.Line > 0 {
		where += ":" + strconv.Itoa(e.Line)
	}
	if e.Source != "" {
		where += " (from " + e.Source + ")"
	}
	return fmt.Sprintf("nginx -t rejected %s: %s", where, e.Output)
}

func (e *ValidationError) Is(target error) bool { return target == ErrRejected }

// validator runs `nginx -t` on the whole main config as it would be with the
// candidate files in place, without touching any live file.
//
// How: candidates are written to a private temp directory. The main config is
// copied next to itself (so nginx's conf prefix, against which relative
// paths such as `include mime.types` or `ssl_certificate x.pem` resolve, is
// unchanged) as a hidden file, with every include that reaches a replaced
// file rewritten into explicit includes of the same files in nginx's sorted
// glob order, the replaced ones swapped for their candidates. Included files
// that themselves include a replaced file are shadowed the same way, in the
// temp directory. nginx -t then runs with the live prefix and the copy.
type validator struct {
	bin    string
	main   string // absolute path of the live main config
	prefix string
}

func newValidator(bin, mainConf, prefix string) *validator {
	if !filepath.IsAbs(mainConf) && prefix != "" {
		mainConf = filepath.Join(prefix, mainConf)
	}
	if abs, err := filepath.Abs(mainConf); err == nil {
		mainConf = abs
	}
	return &validator{bin: bin, main: mainConf, prefix: prefix}
}

// validate checks files (live paths with candidate bytes) against the full config.
func (v *validator) validate(ctx context.Context, files []render.File) error {
	dir, err := os.MkdirTemp("", "lbctl-check-")
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	defer os.RemoveAll(dir)
	replaced, byCandidate, err := writeCandidates(dir, files)
	if err != nil {
		return err
	}
	f, err := atomicfile.CreateTemp(v.main, "check")
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	f.Close()
	mainShadow := f.Name()
	defer os.Remove(mainShadow)
	n := 0
	s := &shadower{confDir: filepath.Dir(v.main), replaced: replaced, written: map[string]string{},
		newPath: func(orig string) string {
			if orig == v.main {
				return mainShadow
			}
			n++
			return filepath.Join(dir, fmt.Sprintf("shadow-%d-%s", n, filepath.Base(orig)))
		}}
	conf, err := s.shadow(v.main, 0)
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	out, err := v.run(ctx, conf)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("validate: %w", ctx.Err())
	}
	return rejection(out, byCandidate, map[string]string{conf: v.main}, s.written)
}

func writeCandidates(dir string, files []render.File) (replaced map[string]string, byCandidate map[string]render.File, err error) {
	replaced, byCandidate = map[string]string{}, map[string]render.File{}
	for i, f := range files {
		live, err := filepath.Abs(f.Path)
		if err != nil {
			return nil, nil, fmt.Errorf("validate %s: %w", f.Path, err)
		}
		c := filepath.Join(dir, fmt.Sprintf("candidate-%d-%s", i, filepath.Base(live)))
		if err := os.WriteFile(c, f.Data, 0o600); err != nil {
			return nil, nil, fmt.Errorf("write candidate for %s: %w", f.Path, err)
		}
		replaced[live] = c
		f.Path = live
		byCandidate[c] = f
	}
	return replaced, byCandidate, nil
}

func (v *validator) run(ctx context.Context, conf string) (string, error) {
	args := []string{"-c", conf, "-t", "-q"}
	if v.prefix != "" {
		args = append([]string{"-p", v.prefix}, args...)
	}
	out, err := exec.CommandContext(ctx, v.bin, args...).CombinedOutput()
	return string(out), err
}

var nginxWhere = regexp.MustCompile(` in (\S+):(\d+)`)

// rejection turns nginx -t output into a ValidationError that names live
// paths, the template and the line.
func rejection(out string, byCandidate map[string]render.File, mains map[string]string, shadows map[string]string) error {
	e := &ValidationError{}
	if m := nginxWhere.FindStringSubmatch(out); m != nil {
		e.Path, e.Line = m[1], atoi(m[2])
		if f, ok := byCandidate[m[1]]; ok {
			e.Path, e.Source = f.Path, f.Source
		}
	}
	var pairs []string
	for c, f := range byCandidate {
		pairs = append(pairs, c, f.Path)
	}
	for shadow, orig := range mains {
		pairs = append(pairs, shadow, orig)
	}
	for orig, shadow := range shadows {
		if shadow != orig {
			pairs = append(pairs, shadow, orig)
		}
	}
	r := strings.NewReplacer(pairs...)
	e.Path = r.Replace(e.Path)
	e.Output = r.Replace(strings.TrimSpace(out))
	return e
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
