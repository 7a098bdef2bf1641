package supervisor

import (
	"os"
	"os/signal"
	"syscall"
)

// dropped receives the signals lbctl takes over only so that its programs
// start with them at their defaults; nothing reads it, so lbctl itself still
// ignores them.
var dropped = make(chan os.Signal, 1)

// defaultDispositions makes the programs lbctl starts from now on begin with
// SIGHUP and SIGINT at their default dispositions, as supervisord's do. Go
// keeps those two ignored when lbctl was started with them ignored (`nohup
// lbctl run` ignores SIGHUP), and an ignored signal stays ignored across
// exec: a program could not even trap it, so `lbctl ctl signal app HUP`
// would do nothing. Every other signal Go already resets on exec. A signal
// Go handles (signal.Notify) is reset to its default in the child.
func defaultDispositions() {
	for _, s := range [...]os.Signal{syscall.SIGHUP, syscall.SIGINT} {
		if signal.Ignored(s) {
			signal.Notify(dropped, s)
		}
	}
}
