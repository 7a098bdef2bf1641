package consultemplate

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"os"
	"sync"
)

// levelTrace is below slog.LevelDebug: consul-template logs every query at
// TRACE, which is noise unless one asks for it.
const levelTrace = slog.LevelDebug - 4

// RouteLibraryLog sends what consul-template's packages write through the
// standard library's global logger ("[TRACE] (view) ...", "[WARN] ...") to
// logger, at the matching level. Without it, every blocking query prints
// TRACE and DEBUG lines to stderr. It changes process-wide state; New calls
// it (see routeLibraryLogOnce) unless something else already took the
// standard logger.
func RouteLibraryLog(logger *slog.Logger) {
	log.SetFlags(0)
	log.SetPrefix("")
	log.SetOutput(libraryLogWriter{logger.With("component", "consul-template-lib")})
}

var routeOnce sync.Once

// routeLibraryLogOnce routes the standard logger to logger the first time it
// is called, if the standard logger still writes to stderr as it does by
// default: a program that set it up itself keeps its choice.
func routeLibraryLogOnce(logger *slog.Logger) {
	routeOnce.Do(func() {
		if log.Writer() == os.Stderr {
			RouteLibraryLog(logger)
		}
	})
}

// libraryLogWriter turns one standard-library log line into a slog record.
type libraryLogWriter struct{ log *slog.Logger }

func (w libraryLogWriter) Write(p []byte) (int, error) {
	level, msg := splitLevel(bytes.TrimRight(p, "\n"))
	w.log.Log(context.Background(), level, string(msg))
	return len(p), nil
}

// libraryLevels maps consul-template's level prefixes to slog levels. Its
// INFO lines are internals and its WARN lines about failed queries repeat
// what the engine logs itself, so they go to Debug; ERR goes to Warn.
var libraryLevels = []struct {
	prefix string
	level  slog.Level
}{
	{"[TRACE] ", levelTrace},
	{"[DEBUG] ", slog.LevelDebug},
	{"[INFO] ", slog.LevelDebug},
	{"[WARN] ", slog.LevelDebug},
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
