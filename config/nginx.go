package config

import (
	"path/filepath"
	"regexp"
)

// nginxSize is a size in nginx's syntax, at least 1 digit and a unit or none.
var nginxSize = regexp.MustCompile(`^[1-9][0-9]{0,6}[kKmMgG]?$`)

// Nginx is the nginx lbctl renders for.
type Nginx struct {
	// Binary is the nginx executable, used for `nginx -t`.
	Binary string `yaml:"binary"`
	// Config is nginx's main config file (nginx -c); validation runs against it.
	Config string `yaml:"config"`
	// Prefix is nginx's prefix path (nginx -p); empty keeps nginx's own.
	Prefix string `yaml:"prefix"`
	// PIDFile finds the nginx master when nginx is not one of lbctl's programs.
	PIDFile string `yaml:"pid_file"`
	// ServicesConf is where the built-in template writes the `services` config;
	// the main config must include it.
	ServicesConf string `yaml:"services_conf"`
	// ErrorLog is the file the main config's error_log writes to, if any.
	// After each SIGHUP lbctl reads what nginx appended, so that a config
	// nginx -t passed but the master refused (a listen address already in
	// use) fails at once instead of at the confirm timeout.
	ErrorLog string `yaml:"error_log"`
	// Program is the name of the supervised program that is nginx: lbctl run
	// signals its master and starts it only after the first good render.
	// When no program has this name, PIDFile finds the master instead.
	Program string `yaml:"program"`
	// LiveUpstreams pushes instance changes to nginx's Lua balancer as data
	// instead of reloading (docs/reload.md, "Live upstreams"); structural
	// changes still reload. It needs nginx's Lua module; without it lbctl
	// says so at start and reloads for every change.
	LiveUpstreams bool `yaml:"live_upstreams"`
	// LiveDir holds the push socket (live.sock) and the last pushed data
	// (live.json, which a restarted nginx loads before its first call).
	// lbctl creates it with mode 0700: only lbctl's user can push.
	LiveDir string `yaml:"live_dir"`
	// LiveMemory is the size of nginx's shared memory for live upstreams
	// (lua_shared_dict, nginx's size syntax).
	LiveMemory string `yaml:"live_memory"`
}

// LiveSocket is the unix socket lbctl pushes live upstreams to.
func (n Nginx) LiveSocket() string { return filepath.Join(n.LiveDir, "live.sock") }

// LiveSeed is the file holding the last pushed live upstreams.
func (n Nginx) LiveSeed() string { return filepath.Join(n.LiveDir, "live.json") }

func (n *Nginx) setDefaults() {
	if n.Binary == "" {
		n.Binary = "nginx"
	}
	if n.Config == "" {
		n.Config = "/etc/nginx/nginx.conf"
	}
	if n.ServicesConf == "" {
		n.ServicesConf = "/etc/nginx/conf.d/lbctl.conf"
	}
	if n.Program == "" {
		n.Program = "nginx"
	}
	if n.LiveDir == "" {
		n.LiveDir = "/run/lbctl"
	}
	if n.LiveMemory == "" {
		n.LiveMemory = "32m"
	}
}

func (n *Nginx) validate(report reporter) {
	if !filepath.IsAbs(n.LiveDir) {
		report("nginx.live_dir", "must be an absolute path, got %q", n.LiveDir)
	}
	if !nginxSize.MatchString(n.LiveMemory) {
		report("nginx.live_memory", "want an nginx size such as 32m or 1g, got %q", n.LiveMemory)
	}
	if !filepath.IsAbs(n.ServicesConf) && n.Prefix == "" {
		// A relative path is taken from lbctl's working directory; allowed, but
		// it must at least name a file.
		if filepath.Base(n.ServicesConf) == "." {
			report("nginx.services_conf", "must name a file")
		}
	}
}
