package config

// Register is a service registration with the local Consul agent. Owned by
// the registrar work (issue: lbctl register).
type Register struct {
	Name string `yaml:"name"`
	Port int    `yaml:"port"`
}

func (r *Register) setDefaults() {}

func (r *Register) validate(at string, report reporter) {}
