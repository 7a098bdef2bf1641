// Package supervisor runs lbctl's programs (nginx among them) the way
// supervisord does — same states (STOPPED, STARTING, RUNNING, BACKOFF,
// STOPPING, EXITED, FATAL), same meanings, same keys — without its polling.
//
// Each program is one goroutine that owns its process and its state
// machine. It is woken by exactly three things: a request (start, stop,
// signal), its process's exit (exec.Cmd.Wait returning, in a goroutine of
// its own), and its one timer (startsecs, backoff, stopwaitsecs). So a
// crash is seen the moment the kernel reports it, and a restart follows at
// once (or after the backoff when the program failed to start).
//
// State changes are published through a broadcast channel that is closed
// and replaced; waiters (dependencies, gates, Start and Stop callers, the
// essential-program watch) take the channel, check their condition, then
// wait on it. Nobody ever blocks sending while holding a lock
// (containerpilot's #465): requests carry a buffered reply channel, PID
// watchers get a capacity-1 latest-value channel.
//
// Process groups: every program starts in its own process group (Setpgid).
// Its stop signal and the SIGKILL after stopwaitsecs go to the whole group,
// so grandchildren stop with it; signals from lbctl ctl signal and
// forward_signals go to the main process only (nginx: HUP, USR1, ...).
//
// Reaping: this package waits only for its own children, with
// exec.Cmd.Wait. Orphaned grandchildren are reaped by PID 1, which, when
// lbctl is PID 1, is the small init in package reaper — a separate process
// — so nothing here ever races a wait4(-1). See package reaper.
package supervisor
