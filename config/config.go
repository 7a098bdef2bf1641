// Package config is lbctl's YAML configuration: strict decoding (an unknown key
// is an error naming the key and its line), defaults filled in one place
// (SetDefaults), and validation in one place (Validate). Each section lives in
// its own file. Nothing here reads the environment: the Consul environment
// variables are applied by the caller, explicitly, through ConsulFromEnv.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Config is the whole lbctl.yaml.
type Config struct {
	// Consul is how lbctl reaches the Consul agent.
	Consul Consul `yaml:"consul"`
	// Nginx is the nginx that lbctl renders for, validates with and signals.
	Nginx Nginx `yaml:"nginx"`
	// Services are rendered with the built-in template into Nginx.ServicesConf.
	Services []Service `yaml:"services"`
	// Templates are consul-template templates, rendered unchanged.
	Templates []Template `yaml:"templates"`
	// Wait folds bursts of Consul changes into one render and reload.
	Wait Wait `yaml:"wait"`
	// HTTP serves the read-only /metrics and /healthz.
	HTTP HTTP `yaml:"http"`
	// Control is the unix socket for lbctl status and lbctl ctl.
	Control Control `yaml:"control"`
	// Programs are the processes lbctl supervises (nginx among them).
	Programs []Program `yaml:"programs"`
	// SupervisordConfig is an existing supervisord ini file whose
	// [program:x] sections are run as well.
	SupervisordConfig string `yaml:"supervisord_config"`
	// Register, when set, registers this load balancer itself in Consul.
	Register *Register `yaml:"register"`
	// LBID names this load balancer in Consul KV (drain confirmations, call
	// statistics); unique among load balancers. Default: the host name.
	LBID string `yaml:"lb_id"`

	// path is the file the config was read from, for error messages.
	path string
	root *yaml.Node
}

// Path is the file the config was loaded from ("" when parsed from bytes).
func (c *Config) Path() string { return c.path }

// Options are the inputs to a config besides the file itself.
type Options struct {
	// Env looks up Consul's environment variables (os.LookupEnv); nil reads none.
	Env func(string) (string, bool)
	// ConsulFlags are command-line overrides: fields set here win over the file.
	ConsulFlags Consul
}

// Load reads, strictly decodes, defaults and validates the config at path.
// Consul settings layer as environment < file < flags. Errors name the file and line.
func Load(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, opts)
}

// Parse is Load for bytes already read; name is used in error messages.
func Parse(name string, data []byte, opts Options) (*Config, error) {
	cfg := &Config{path: name}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(name, err)
	}
	cfg.root = &root
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty file is an empty config: Decode says io.EOF.
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(name, err)
	}
	if opts.Env != nil {
		cfg.Consul = cfg.Consul.Over(ConsulFromEnv(opts.Env))
	}
	cfg.Consul = opts.ConsulFlags.Over(cfg.Consul)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// SetDefaults fills every unset field that has a default. It is the only
// place defaults are decided.
func (c *Config) SetDefaults() {
	c.Consul.setDefaults()
	c.Nginx.setDefaults()
	for i := range c.Services {
		c.Services[i].setDefaults()
	}
	c.Wait.setDefaults()
	c.HTTP.setDefaults()
	c.Control.setDefaults()
	for i := range c.Programs {
		if c.Programs[i].Name == c.Nginx.Program && c.Programs[i].StartSecs == nil {
			c.Programs[i].StartSecs = ptr(NginxStartSecs)
		}
		c.Programs[i].setDefaults()
	}
	if c.Register != nil {
		c.Register.setDefaults()
	}
}

// Validate checks the whole config and reports every problem found, each with
// the file and line of the offending key when the config came from YAML.
func (c *Config) Validate() error {
	var errs []error
	report := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{File: c.path, Line: c.lineOf(path), Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	c.Consul.validate(report)
	c.Nginx.validate(report)
	validateServices(c.Services, report)
	validateTemplates(c.Templates, report)
	c.Wait.validate(report)
	c.HTTP.validate(report)
	c.Control.validate(report)
	if c.LBID != "" && !safeName.MatchString(c.LBID) {
		report("lb_id", "want letters, digits, '.', '_', '-', got %q", c.LBID)
	}
	validatePrograms(c.Programs, report)
	if c.Register != nil {
		c.Register.validate("register", report)
	}
	return errors.Join(errs...)
}

// reporter records one validation problem at a dotted path such as
// "services[2].listen".
type reporter func(path, format string, args ...any)

// FieldError is a validation problem at one key of the config.
type FieldError struct {
	File string
	Line int
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	where := e.File
	if where == "" {
		where = "config"
	}
	if e.Line > 0 {
		where += ":" + strconv.Itoa(e.Line)
	}
	return fmt.Sprintf("%s: %s: %s", where, e.Path, e.Msg)
}

var yamlLineRE = regexp.MustCompile(`line (\d+): field (\S+) not found in type config\.(\w+)`)

// yamlError rewrites yaml.v3's messages into "file:line: ..." form.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var msgs []string
	for _, m := range te.Errors {
		if sub := yamlLineRE.FindStringSubmatch(m); sub != nil {
			msgs = append(msgs, fmt.Sprintf("%s:%s: unknown key %q (in %s)", name, sub[1], sub[2], sectionName(sub[3])))
			continue
		}
		msgs = append(msgs, fmt.Sprintf("%s:%s", name, strings.TrimPrefix(m, "line ")))
	}
	return errors.New(strings.Join(msgs, "\n"))
}

// sectionName turns a Go type name from yaml's message into the YAML section a user knows.
func sectionName(goType string) string {
	names := map[string]string{
		"Config": "the top level", "Consul": "consul", "Nginx": "nginx", "Service": "a service",
		"Template": "a template", "Wait": "wait", "HTTP": "http", "Control": "control",
		"Program": "a program", "Register": "register",
	}
	if n, ok := names[goType]; ok {
		return n
	}
	return strings.ToLower(goType)
}

// lineOf finds the line of a dotted path ("services[1].listen") in the YAML
// the config was parsed from; 0 when unknown.
func (c *Config) lineOf(path string) int {
	if c.root == nil || len(c.root.Content) == 0 {
		return 0
	}
	node := c.root.Content[0]
	line := node.Line
	for _, part := range splitPath(path) {
		next := childNode(node, part)
		if next == nil {
			return line
		}
		node, line = next, next.Line
	}
	return line
}

func splitPath(path string) []string {
	path = strings.ReplaceAll(path, "[", ".[")
	return strings.FieldsFunc(path, func(r rune) bool { return r == '.' })
}

func childNode(n *yaml.Node, part string) *yaml.Node {
	if strings.HasPrefix(part, "[") {
		i, err := strconv.Atoi(strings.Trim(part, "[]"))
		if err != nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
			return nil
		}
		return n.Content[i]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == part {
			return n.Content[i+1]
		}
	}
	return nil
}
