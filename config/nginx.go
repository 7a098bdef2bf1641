package config

import "path/filepath"

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
}

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
}

func (n *Nginx) validate(report reporter) {
	if !filepath.IsAbs(n.ServicesConf) && n.Prefix == "" {
		// A relative path is taken from lbctl's working directory; allowed, but
		// it must at least name a file.
		if filepath.Base(n.ServicesConf) == "." {
			report("nginx.services_conf", "must name a file")
		}
	}
}
