package config

// Program is one process lbctl supervises. Owned by the supervisor work
// (issue: supervisor and PID 1); fields follow supervisord's [program:x].
type Program struct {
	Name    string   `yaml:"name"`
	Command []string `yaml:"command"`
}

func (p *Program) setDefaults() {}

func validatePrograms(programs []Program, report reporter) {}
