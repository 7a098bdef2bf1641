package consultemplate

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// levelTrace is below slog.LevelDebug: consul-template logs every query at
// TRACE, which is noise unless one asks for it.
const levelTrace = slog.LevelDebug - 4

// RouteLibraryLog sends what consul-template's packages write through the
// standard library's global logger ("[TRACE] (view) ...", "[WARN] ...") to
// logger, at the matching level. Without it, every blocking query prints
// TRACE and DEBUG lines to stderr. It changes process-wide state, so main
// calls it once; New does not.
func RouteLibraryLog(logger *slog.Logger) {
	log.SetFlags(0)
	log.SetPrefix("")
	log.SetOutput(libraryLogWriter{logger.With("component", "consul-template-lib")})
}

// libraryLogWriter turns one standard-library log line into a slog record.
type libraryLogWriter struct{ log *slog.Logger }

func (w libraryLogWriter) Write(p []byte) (int, error) {
	level, msg := splitLevel(bytes.TrimRight(p, "\n"))
	w.log.Log(context.Background(), level, string(msg))
	return len(p), nil
}

// libraryLevels maps consul-template's level prefixes to slog levels. Its
// INFO lines are internals, and its WARN and ERR lines about queries repeat
// what the engine itself logs, so each goes one level down.
var libraryLevels = []struct {
	prefix string
	level  slog.Level
}{
	{"[TRACE] ", levelTrace},
	{"[DEBUG] ", slog.LevelDebug},
	{"[INFO] ", slog.LevelDebug},
	{"[WARN] ", slog.LevelInfo},
	{"[ERR] ", slog.LevelWarn},
	{"[ERROR] ", slog.LevelWarn},
}

// splitLevel reads the level prefix off a line; lines without one are Info.
func splitLevel(line []byte) (slog.Level, []byte) {
	for _, l := range libraryLevels {
		if rest, ok := bytes.CutPrefix(line, []byte(l.prefix)); ok {
			return l.level, rest
		}
	}
	return slog.LevelInfo, line
}
