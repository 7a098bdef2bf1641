package consultemplate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"

	dep "github.com/hashicorp/consul-template/dependency"
	cttemplate "github.com/hashicorp/consul-template/template"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/render"
)

// defaultPerms is a destination's mode when the config gives none, as in consul-template.
const defaultPerms fs.FileMode = 0o644

// sideEffectFuncs are the template functions that act outside the template
// (run a program, write a file). They are denied in the trial execution that
// checks a template, so checking never has effects; real renders allow them.
var sideEffectFuncs = []string{"plugin", "writeToFile"}

// loadedTemplate is one configured template, read and parsed.
type loadedTemplate struct {
	cfg config.Template
	ct  *cttemplate.Template
}

// file is the render.File for this template's output.
func (t *loadedTemplate) file(data []byte) render.File {
	perms := fs.FileMode(t.cfg.Perms)
	if perms == 0 {
		perms = defaultPerms
	}
	return render.File{Path: t.cfg.Destination, Data: data, Perms: perms, Source: t.cfg.Source}
}

// Check reads and parses every template without contacting Consul, for
// `lbctl validate`. Errors name the file and line.
func Check(templates []config.Template) error {
	_, err := loadTemplates(templates)
	return err
}

// loadTemplates reads and parses every template, in config order.
func loadTemplates(templates []config.Template) ([]*loadedTemplate, error) {
	var errs []error
	loaded := make([]*loadedTemplate, 0, len(templates))
	for _, cfg := range templates {
		t, err := loadTemplate(cfg)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		loaded = append(loaded, t)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return loaded, nil
}

// loadTemplate reads cfg's source and checks that it parses.
func loadTemplate(cfg config.Template) (*loadedTemplate, error) {
	contents, err := os.ReadFile(cfg.Source)
	if err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	if err := parseTemplate(cfg, contents); err != nil {
		return nil, err
	}
	ct, err := newCTTemplate(cfg, contents, nil)
	if err != nil {
		return nil, err
	}
	return &loadedTemplate{cfg: cfg, ct: ct}, nil
}

// newCTTemplate is cfg as a consul-template template over contents read
// earlier (so the file is read once and its read error is ours).
func newCTTemplate(cfg config.Template, contents []byte, denied []string) (*cttemplate.Template, error) {
	ct, err := cttemplate.NewTemplate(&cttemplate.NewTemplateInput{
		Source:           cfg.Source,
		Destination:      cfg.Destination,
		LeftDelim:        cfg.LeftDelim,
		RightDelim:       cfg.RightDelim,
		ErrFatal:         true,
		FunctionDenylist: denied,
		ReaderFunc:       func(string) ([]byte, error) { return contents, nil },
	})
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", cfg.Source, err)
	}
	return ct, nil
}

// parseTemplate parses cfg's template with consul-template's own functions.
// consul-template parses only inside Execute, so this executes it once with
// no data and side-effect functions denied, and keeps only parse errors:
// execution errors on empty data say nothing about the template.
func parseTemplate(cfg config.Template, contents []byte) error {
	probe, err := newCTTemplate(cfg, contents, sideEffectFuncs)
	if err != nil {
		return err
	}
	res, err := probe.Execute(&cttemplate.ExecuteInput{Brain: cttemplate.NewBrain()})
	if err != nil && isParseError(err) {
		return locate(cfg.Source, err)
	}
	if err == nil {
		return checkSupported(cfg.Source, res.Used)
	}
	return nil
}

// checkSupported refuses dependencies on Vault or Nomad: lbctl builds only a
// Consul client, and consul-template's Vault and Nomad functions would use a
// nil one.
func checkSupported(source string, used *dep.Set) error {
	for _, d := range used.List() {
		if d.Type() == dep.TypeVault || d.Type() == dep.TypeNomad {
			return fmt.Errorf("template %s: %s: lbctl talks only to Consul, not Vault or Nomad", source, d)
		}
	}
	return nil
}

// isParseError tells a parse error from an execution error in what
// Template.Execute returns (it wraps them as "parse: ..." and "execute: ...").
func isParseError(err error) bool {
	return strings.HasPrefix(err.Error(), "parse: ")
}

// textTemplateLocation is how text/template names a place in a template
// called "" (as consul-template names them): "template: :3: " or
// "template: :3:14: ".
var textTemplateLocation = regexp.MustCompile(`^template: :(\d+(?::\d+)?): `)

// locate rewrites a text/template error to name the template file:
// "template: :3: unexpected ..." becomes "lb.tpl:3: unexpected ...", and
// `template: :2:7: executing "" at <f>: ...` becomes "lb.tpl:2:7: at <f>: ...".
func locate(source string, err error) error {
	msg := innermost(err).Error()
	if m := textTemplateLocation.FindStringSubmatch(msg); m != nil {
		// consul-template names every template "": say where, not `executing "" at`.
		rest := strings.Replace(msg[len(m[0]):], `executing "" at `, "at ", 1)
		return fmt.Errorf("%s:%s: %s", source, m[1], rest)
	}
	return fmt.Errorf("template %s: %w", source, err)
}

// innermost unwraps err down to its cause. Template.Execute wraps
// text/template's error (which wraps nothing) with github.com/pkg/errors.
func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
