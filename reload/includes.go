package reload

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// include is one `include <pattern>;` directive in an nginx config file.
type include struct {
	pattern    string // as written, unquoted
	start, end int    // byte span of the whole directive, `include` to `;`
}

// findIncludes lists the include directives of an nginx config. It tokenizes
// like nginx does (comments, quotes, escapes, `;`, `{`, `}`) so that an
// "include" inside a comment or a string is not taken for a directive.
func findIncludes(data []byte) []include {
	var (
		incs  []include
		stmt  []string // words of the current statement
		start int      // where the current statement's first word began
	)
	for i := 0; i < len(data); {
		c := data[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '#':
			for i < len(data) && data[i] != '\n' {
				i++
			}
		case c == ';':
			if len(stmt) == 2 && stmt[0] == "include" {
				incs = append(incs, include{pattern: stmt[1], start: start, end: i + 1})
			}
			stmt = stmt[:0]
			i++
		case c == '{' || c == '}':
			stmt = stmt[:0]
			i++
		default:
			word, next := readWord(data, i)
			if len(stmt) == 0 {
				start = i
			}
			stmt = append(stmt, word)
			i = next
		}
	}
	return incs
}

// readWord reads one word or quoted string starting at i.
func readWord(data []byte, i int) (string, int) {
	var b strings.Builder
	if q := data[i]; q == '"' || q == '\'' {
		for i++; i < len(data) && data[i] != q; i++ {
			if data[i] == '\\' && i+1 < len(data) {
				i++
			}
			b.WriteByte(data[i])
		}
		return b.String(), i + 1
	}
	for ; i < len(data); i++ {
		c := data[i]
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';' || c == '{' || c == '}' {
			break
		}
		if c == '\\' && i+1 < len(data) {
			i++
			c = data[i]
		}
		b.WriteByte(c)
	}
	return b.String(), i
}

// shadower builds, for one validation, copies of the config files that lead
// to a replaced file, with their includes pointing at the replacements.
// Files that lead to no replaced file are used as they are.
type shadower struct {
	confDir  string            // nginx's conf prefix: relative includes start here
	replaced map[string]string // live path -> candidate path
	newPath  func(orig string) string
	written  map[string]string // original -> its shadow, once written
}

const maxIncludeDepth = 16

// shadow returns the path nginx should read instead of file (file itself
// when nothing under it is replaced), writing shadow copies as needed.
func (s *shadower) shadow(file string, depth int) (string, error) {
	if c, ok := s.replaced[file]; ok {
		return c, nil
	}
	if p, ok := s.written[file]; ok {
		return p, nil
	}
	if depth > maxIncludeDepth {
		return "", fmt.Errorf("includes nested deeper than %d at %s", maxIncludeDepth, file)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		// Unreadable here: leave it to nginx -t to say so, as it would live.
		s.written[file] = file
		return file, nil
	}
	out, changed, err := s.rewrite(data, depth)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	if !changed {
		s.written[file] = file
		return file, nil
	}
	p := s.newPath(file)
	if err := os.WriteFile(p, out, 0o600); err != nil {
		return "", fmt.Errorf("write shadow of %s: %w", file, err)
	}
	s.written[file] = p
	return p, nil
}

// rewrite replaces each include that reaches a replaced file with explicit
// includes of the same files, in nginx's (sorted glob) order.
func (s *shadower) rewrite(data []byte, depth int) ([]byte, bool, error) {
	var out bytes.Buffer
	changed, last := false, 0
	for _, inc := range findIncludes(data) {
		files, err := s.expand(inc.pattern)
		if err != nil {
			return nil, false, err
		}
		var repl strings.Builder
		touched := false
		for _, f := range files {
			p, err := s.shadow(f, depth+1)
			if err != nil {
				return nil, false, err
			}
			touched = touched || p != f
			fmt.Fprintf(&repl, "include %s; ", quote(p))
		}
		if !touched {
			continue
		}
		out.Write(data[last:inc.start])
		out.WriteString(repl.String())
		last, changed = inc.end, true
	}
	out.Write(data[last:])
	return out.Bytes(), changed, nil
}

// expand resolves an include pattern the way nginx does: relative to the
// conf prefix, globbed and sorted; a replaced file that does not exist yet
// but matches is included too.
func (s *shadower) expand(pattern string) ([]string, error) {
	if !filepath.IsAbs(pattern) {
		pattern = filepath.Join(s.confDir, pattern)
	}
	if !strings.ContainsAny(pattern, "*?[") {
		return []string{filepath.Clean(pattern)}, nil
	}
	found, err := filepath.Glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("include %s: %w", pattern, err)
	}
	// glob(3), which nginx uses, leaves out dot files unless the pattern
	// names them; filepath.Glob does not.
	hidden := strings.HasPrefix(filepath.Base(pattern), ".")
	var files []string
	for _, f := range found {
		if hidden || !strings.HasPrefix(filepath.Base(f), ".") {
			files = append(files, f)
		}
	}
	for live := range s.replaced {
		if ok, _ := filepath.Match(pattern, live); ok && !slices.Contains(files, live) {
			files = append(files, live)
		}
	}
	slices.Sort(files)
	return files, nil
}

// quote writes p as an nginx string.
func quote(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(p) + `"`
}
