package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	svconfig "github.com/ochinchina/supervisord/config"

	"github.com/lbctl/lbctl/config"
)

// honouredKeys are the [program:x] keys LoadSupervisord maps (docs/supervisor.md).
var ignoredKeys = []string{
	"umask", "serverurl", "stdout_capture_maxbytes", "stdout_events_enabled", "stdout_syslog",
	"stderr_logfile", "stderr_logfile_maxbytes", "stderr_logfile_backups", "stderr_capture_maxbytes",
	"stderr_events_enabled", "stderr_syslog", "restartpause", "restart_when_binary_changed",
	"restart_cmd_when_binary_changed", "restart_signal_when_binary_changed", "restart_directory_monitor",
	"restart_file_pattern",
}

// LoadSupervisordINI reads the [program:x] sections of a supervisord
// config file (with its [include] files, [program-default] and numprocs, as
// github.com/ochinchina/supervisord/config reads them) and maps them onto
// lbctl programs, defaulted and checked, in supervisord's start order
// (priority, then depends_on). Keys lbctl does not honour come back as
// warnings, one per program and key.
func LoadSupervisordINI(path string) (programs []config.Program, warnings []string, err error) {
	defer func() {
		// The library indexes past the end of some malformed values
		// (environment=A=): a bad file must be an error, not a crash.
		if r := recover(); r != nil {
			programs, err = nil, fmt.Errorf("supervisord config %s: cannot parse: %v", path, r)
		}
	}()
	if _, err := os.Stat(path); err != nil {
		// The library silently reads a missing file as empty.
		return nil, nil, fmt.Errorf("supervisord config: %w", err)
	}
	ini := svconfig.NewConfig(path)
	if _, err := ini.Load(); err != nil {
		return nil, nil, fmt.Errorf("supervisord config %s: %w", path, err)
	}
	var errs []error
	for _, e := range ini.GetEventListeners() {
		warnings = append(warnings, fmt.Sprintf("%s: [%s]: event listeners are not supported, ignored", path, e.Name))
	}
	for _, e := range ini.GetPrograms() {
		p, err := programFromEntry(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: [program:%s]: %w", path, e.GetProgramName(), err))
			continue
		}
		for _, k := range ignoredKeys {
			if e.HasParameter(k) {
				warnings = append(warnings, fmt.Sprintf("%s: [program:%s]: %s is not supported, ignored", path, p.Name, k))
			}
		}
		programs = append(programs, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, warnings, err
	}
	if err := config.CheckPrograms(path, programs); err != nil {
		return nil, warnings, err
	}
	return programs, warnings, nil
}

func programFromEntry(e *svconfig.Entry) (config.Program, error) {
	argv, err := splitCommand(e.GetString("command", ""))
	if err != nil {
		return config.Program{}, fmt.Errorf("command: %w", err)
	}
	p := config.Program{
		Name:         e.GetProgramName(),
		Command:      argv,
		Directory:    e.GetString("directory", ""),
		User:         e.GetString("user", ""),
		Autostart:    ptr(e.GetBool("autostart", true)),
		Autorestart:  strings.ToLower(e.GetString("autorestart", config.AutorestartUnexpected)),
		StartSecs:    ptr(float64(e.GetInt("startsecs", 1))),
		StartRetries: ptr(e.GetInt("startretries", 3)),
		StopSignal:   e.GetString("stopsignal", "TERM"),
		StopWaitSecs: ptr(float64(e.GetInt("stopwaitsecs", 10))),
	}
	for _, kv := range e.GetEnv("environment") {
		k, v, _ := strings.Cut(kv, "=")
		if p.Environment == nil {
			p.Environment = map[string]string{}
		}
		p.Environment[k] = v
	}
	if e.HasParameter("exitcodes") {
		for _, s := range e.GetStringArray("exitcodes", ",") {
			code, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return config.Program{}, fmt.Errorf("exitcodes: %q is not a number", s)
			}
			p.ExitCodes = append(p.ExitCodes, code)
		}
	}
	for _, d := range e.GetStringArray("depends_on", ",") {
		if d = strings.TrimSpace(d); d != "" {
			p.DependsOn = append(p.DependsOn, d)
		}
	}
	if f := e.GetStringExpression("stdout_logfile", ""); logsToFile(f) {
		p.LogFile = f
		p.LogFileMaxBytes = ptr(int64(e.GetBytes("stdout_logfile_maxbytes", 50<<20)))
		p.LogFileBackups = ptr(e.GetInt("stdout_logfile_backups", 10))
	}
	return p, nil
}

// logsToFile: supervisord's special values mean "no file of lbctl's own".
func logsToFile(f string) bool {
	switch strings.ToUpper(f) {
	case "", "NONE", "AUTO", "/DEV/STDOUT", "/DEV/STDERR", "/DEV/FD/1", "/DEV/FD/2":
		return false
	}
	return true
}

func ptr[T any](v T) *T { return &v }

// splitCommand splits a command line the way supervisord's shlex.split
// does: blanks separate words, single quotes keep everything, double quotes
// keep everything but backslash escapes, a backslash outside quotes escapes
// the next character.
func splitCommand(s string) ([]string, error) {
	var (
		words   []string
		cur     strings.Builder
		inWord  bool
		quote   rune
		escaped bool
	)
	for _, r := range s {
		switch {
		case escaped:
			if quote == '"' && r != '"' && r != '\\' && r != '$' && r != '`' {
				cur.WriteRune('\\')
			}
			cur.WriteRune(r)
			escaped = false
		case r == '\\' && quote != '\'':
			escaped, inWord = true, true
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 || escaped {
		return nil, fmt.Errorf("unterminated quote or escape in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		return nil, errors.New("required")
	}
	return words, nil
}
