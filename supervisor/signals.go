package supervisor

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"
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
// would do nothing. Every other signal Go already resets on exec, and so it
// does for one that Go handles (signal.Notify): hence the Notify.
func defaultDispositions() {
	for _, s := range [...]syscall.Signal{syscall.SIGHUP, syscall.SIGINT} {
		if ignoredNow(s) {
			signal.Notify(dropped, s)
		}
	}
}

// ignoredNow asks the kernel whether sig is ignored (SIG_IGN) right now.
// signal.Ignored only knows what os/signal did, not what the process
// inherited after os/signal has handled and released the signal.
func ignoredNow(sig syscall.Signal) bool {
	var act [4]uint64 // struct sigaction; the handler comes first
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&act)), 8, 0, 0)
	const sigIgn = 1
	return errno == 0 && act[0] == sigIgn
}
