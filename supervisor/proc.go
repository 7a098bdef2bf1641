package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"
)

// program is one supervised program: a goroutine (loop) that owns its
// process and its state machine, fed by requests, its process's exit and
// its one timer. Nothing else changes its state, so there is nothing to lock
// around transitions; mu only guards the fields others read (status).
type program struct {
	sup *Supervisor
	log *slog.Logger

	reqs  chan request
	exits chan exitEvent
	done  chan struct{} // closed when loop returns

	spec Program // never changes: a changed program is replaced by a new one
	name string  // spec.Name

	// Owned by loop.
	proc             *process
	left             *leftovers // the exited process's group, being ended
	wantUp           bool       // start, restart after exits, retry
	waiting          bool       // wants to start once dependencies and gates are ready
	restartAfterStop bool
	failures         int // failed starts in a row
	started          bool
	timerC           <-chan time.Time
	stopTimer        func() bool
	timerKind        timerKind
	logFile          *rotatingFile
	reportedPID      int // in the last Transition

	// Written by loop under mu, read by anyone under mu.
	mu  sync.Mutex
	pub Status
}

type timerKind int

const (
	timerNone timerKind = iota
	timerStartSecs
	timerBackoff
	timerStopWait
)

// killWait is how long the processes left in a group get to die after
// SIGKILL before the supervisor gives up on them and goes on.
const killWait = time.Second

// leftovers is the process group of a main process that exited with
// members still alive. While held, the exit waits: the program stays
// STOPPING, with no pid, until the group is gone or, if its members held
// listening sockets, until none does (sockets lbctl holds too do not count:
// they stay open for the next process); then the exit is handled as it would
// have been at once. Members that are finishing their calls after that go
// on doing so beside the new process, until they exit or stopwaitsecs end.
type leftovers struct {
	pgid   int
	from   State // the state the exit came in; a stop or start request makes it Stopping
	code   int
	held   bool // the exit is not acted on yet
	killed bool
	// gone: the group is empty (nil) or the wait was cancelled.
	gone chan error
	// released: no member holds a listening socket that lbctl does not
	// hold too; nil when none held any.
	released chan error
	// timer: stopwaitsecs, then killWait after SIGKILL.
	timer  *time.Timer
	cancel context.CancelFunc
}

type reqKind int

const (
	reqStart reqKind = iota
	reqStop
	reqSignal
)

type request struct {
	kind  reqKind
	sig   syscall.Signal
	reply chan error // buffered 1
}

type exitEvent struct {
	proc *process
	err  error
	at   time.Time
}

// Errors callers branch on.
var (
	ErrUnknownProgram = errors.New("no such program")
	ErrNotRunning     = errors.New("not running")
	ErrAlreadyStarted = errors.New("already started")
	ErrSupervisorDone = errors.New("supervisor is not running")
)

func newProgram(s *Supervisor, spec Program) *program {
	return &program{
		sup:   s,
		log:   s.log.With("program", spec.Name),
		spec:  spec,
		name:  spec.Name,
		reqs:  make(chan request),
		exits: make(chan exitEvent, 1),
		done:  make(chan struct{}),
		pub:   Status{Name: spec.Name, State: Stopped},
	}
}

// loop runs until ctx is cancelled; the supervisor stops the program first.
func (p *program) loop(ctx context.Context) {
	defer close(p.done)
	defer p.closeLog()
	p.openLog()
	if p.spec.Autostart {
		p.wantStart()
	}
	for {
		var readyC <-chan struct{}
		if p.waiting {
			readyC = p.sup.changes.wait() // taken before the check: no lost wake-up
			if p.tryStart() {
				continue
			}
		}
		select {
		case <-ctx.Done():
			p.abandon()
			return
		case r := <-p.reqs:
			r.reply <- p.handle(r)
		case ev := <-p.exits:
			p.onExit(ev)
		case <-p.timerC:
			p.onTimer()
		case <-p.leftGone():
			p.leftoversGone()
		case <-p.leftReleased():
			p.listenersReleased()
		case <-p.leftTimer():
			p.onLeftTimer()
		case <-readyC:
		}
	}
}

func (p *program) handle(r request) error {
	switch r.kind {
	case reqStart:
		return p.onStartRequest()
	case reqStop:
		p.onStopRequest()
		return nil
	case reqSignal:
		if p.proc == nil {
			return fmt.Errorf("signal %s: %w", p.spec.Name, ErrNotRunning)
		}
		return p.proc.cmd.Process.Signal(r.sig)
	}
	return fmt.Errorf("unknown request %d", r.kind)
}

func (p *program) onStartRequest() error {
	switch p.pub.State {
	case Starting, Running:
		return fmt.Errorf("start %s: %w", p.spec.Name, ErrAlreadyStarted)
	case Stopping:
		p.restartAfterStop = true
		if p.holding() {
			p.wantUp, p.left.from = true, Stopping
		}
		return nil
	case Backoff:
		p.cancelTimer()
		p.failures = 0
		p.startProcess()
		return nil
	}
	p.wantStart()
	return nil
}

func (p *program) onStopRequest() {
	p.wantUp, p.waiting, p.restartAfterStop = false, false, false
	if p.holding() {
		p.left.from = Stopping
	}
	switch p.pub.State {
	case Starting, Running:
		p.sendStop()
	case Backoff:
		p.cancelTimer()
		p.setState(Stopped, "")
	case Stopped:
		p.setState(Stopped, "")
	}
}

// wantStart starts the program now, or as soon as its dependencies and
// gates allow.
func (p *program) wantStart() {
	p.wantUp, p.failures = true, 0
	p.tryStart()
}

// tryStart spawns the process if dependencies and gates are ready, and
// says so; otherwise the program waits, STOPPED, its note saying for what.
func (p *program) tryStart() bool {
	why := p.sup.notReady(&p.spec)
	if why == "" {
		p.waiting = false
		p.startProcess()
		return true
	}
	p.waiting = true
	p.setWaiting(why)
	return false
}

// startProcess spawns the process: STARTING, or RUNNING at once when
// StartSecs is 0; a spawn error counts as a failed start.
func (p *program) startProcess() {
	proc, err := p.spawn()
	if err != nil {
		p.log.Warn("spawn failed", "err", err)
		p.setExit(&Exit{Code: -1, Err: err.Error(), At: time.Now()})
		p.failedStart()
		return
	}
	p.proc = proc
	go func() {
		err := proc.wait() // the moment the process exits, and its last output is out
		p.exits <- exitEvent{proc: proc, err: err, at: time.Now()}
	}()
	if p.started {
		p.sup.metrics.restarted(p.spec.Name)
	}
	p.mu.Lock()
	if p.started {
		p.pub.Restarts++
	}
	p.pub.PID, p.pub.Since = proc.pid, time.Now()
	p.mu.Unlock()
	p.started = true
	if p.spec.StartSecs <= 0 {
		p.failures = 0
		p.setState(Running, "")
		return
	}
	p.setState(Starting, "")
	p.startTimer(p.spec.StartSecs, timerStartSecs)
}

// spawn runs the program's BeforeStart hook, then its command with the
// hook's extras.
func (p *program) spawn() (*process, error) {
	extras, err := p.sup.runBeforeStart(p.spec.Name)
	if err != nil {
		return nil, err
	}
	return spawn(&p.spec, extras, p.sup.stdout, p.sup.stderr, p.logFile)
}

// failedStart is BACKOFF with a growing delay, or FATAL once StartRetries
// retries have failed.
func (p *program) failedStart() {
	p.failures++
	if p.failures > p.spec.StartRetries {
		p.wantUp = false
		p.setState(Fatal, fmt.Sprintf("gave up after %d failed starts", p.failures)+p.lastWords())
		return
	}
	delay := backoffDelay(p.failures, p.spec.BackoffMin, p.spec.BackoffMax, p.sup.rand)
	p.setState(Backoff, fmt.Sprintf("retry %d/%d in %s", p.failures, p.spec.StartRetries, delay.Round(time.Millisecond))+p.lastWords())
	p.startTimer(delay, timerBackoff)
}

func (p *program) onTimer() {
	kind := p.timerKind
	p.timerC, p.stopTimer, p.timerKind = nil, nil, timerNone
	switch {
	case kind == timerStartSecs && p.pub.State == Starting:
		p.failures = 0
		p.setState(Running, "")
	case kind == timerBackoff && p.pub.State == Backoff:
		p.startProcess()
	case kind == timerStopWait && p.pub.State == Stopping && p.proc != nil:
		p.log.Warn("did not stop in time, sending SIGKILL to its process group", "stopwait", p.spec.StopWait)
		if err := signalGroup(p.proc.pid, syscall.SIGKILL, true); err != nil {
			p.log.Error("kill", "err", err)
		}
		p.setNote("killed after stopwaitsecs")
	}
}

func (p *program) onExit(ev exitEvent) {
	if ev.proc != p.proc {
		return
	}
	p.proc = nil
	p.cancelTimer()
	code, sig := exitOf(ev.err)
	p.setExit(&Exit{Code: code, Signal: sig, Output: ev.proc.lastWords(), At: ev.at})
	p.log.Info("exited", "exit", p.pub.LastExit.String(), "state", p.pub.State)
	if p.endLeftovers(ev.proc.pid, code) {
		return
	}
	p.afterExit(p.pub.State, code)
}

// endLeftovers ends what is left of the exited process's group before the
// exit is acted on: the stop signal (unless the group was sent it already),
// SIGKILL after stopwaitsecs. The program shows STOPPING with no pid
// meanwhile, so nothing signals a main process that is gone. It says whether
// there was anything left; an empty group (the common case) costs one
// kill(-pgid, 0). The members and their listening sockets are read before
// the stop signal, while they still serve: after it, a nginx worker closes
// its listening sockets at once, and that is the moment the port closes.
func (p *program) endLeftovers(pgid int, code int) bool {
	if !groupExists(pgid) {
		return false
	}
	p.dropDraining()
	members := groupMembers(pgid)
	if len(members) == 0 {
		return false // zombies only, waiting for their new parent
	}
	listeners := listenersHeld(members)
	toRelease := notHeldHere(listeners)
	from := p.pub.State
	if from != Stopping {
		if err := signalGroup(pgid, p.spec.StopSignal, true); err != nil {
			p.log.Error("stop leftovers", "err", err)
		}
	}
	p.log.Warn("main process exited, leaving processes in its group; ending them before anything else",
		"pgid", pgid, "pids", members, "listening_sockets", len(listeners), "held_by_lbctl", len(listeners)-len(toRelease),
		"signal", signalName(p.spec.StopSignal), "stopwait", p.spec.StopWait)
	p.left = watchLeftovers(pgid, from, code, toRelease, p.spec.StopWait)
	p.mu.Lock()
	p.pub.PID, p.pub.Since = 0, time.Time{}
	p.mu.Unlock()
	p.setState(Stopping, fmt.Sprintf("ending %d processes left in process group %d (%s, SIGKILL after %s)",
		len(members), pgid, signalName(p.spec.StopSignal), p.spec.StopWait))
	if len(listeners) > 0 && len(toRelease) == 0 {
		p.listenersReleased() // lbctl holds every socket they listen on: go on now
	}
	return true
}

// watchLeftovers starts waiting for group pgid to be gone and, when
// toRelease is not empty, for those sockets to be released; its timer runs
// stopWait.
func watchLeftovers(pgid int, from State, code int, toRelease []heldListener, stopWait time.Duration) *leftovers {
	ctx, cancel := context.WithCancel(context.Background())
	l := &leftovers{pgid: pgid, from: from, code: code, held: true,
		gone: make(chan error, 1), timer: time.NewTimer(stopWait), cancel: cancel}
	go func() { l.gone <- waitGroupGone(ctx, pgid) }()
	if len(toRelease) > 0 {
		l.released = make(chan error, 1)
		go func() { l.released <- waitReleased(ctx, toRelease) }()
	}
	return l
}

// holding says whether an exit is held back while its group is ended.
func (p *program) holding() bool { return p.left != nil && p.left.held }

func (p *program) leftGone() <-chan error {
	if p.left == nil {
		return nil
	}
	return p.left.gone
}

func (p *program) leftReleased() <-chan error {
	if p.left == nil {
		return nil
	}
	return p.left.released
}

func (p *program) leftTimer() <-chan time.Time {
	if p.left == nil {
		return nil
	}
	return p.left.timer.C
}

// listenersReleased acts on the held exit once no leftover holds a
// listening socket the next process must bind: the ports are free for it
// (or held open by lbctl), and the
// leftovers finish what they are doing beside it (they have had the stop
// signal; SIGKILL still follows at the end of stopwaitsecs).
func (p *program) listenersReleased() {
	l := p.left
	l.released = nil
	if !l.held {
		return
	}
	l.held = false
	p.log.Info("processes left in its group hold no listening socket the next process must bind; going on while they finish",
		"pgid", l.pgid)
	p.afterExit(l.from, l.code)
}

// leftoversGone acts on the exit that endLeftovers held back, if it still is.
func (p *program) leftoversGone() {
	l := p.left
	p.left = nil
	l.cancel()
	l.timer.Stop()
	p.log.Info("process group ended", "pgid", l.pgid, "killed", l.killed)
	if l.held {
		p.afterExit(l.from, l.code)
	}
}

// onLeftTimer sends SIGKILL to leftovers that outlived stopwaitsecs, and
// gives up on them killWait later.
func (p *program) onLeftTimer() {
	l := p.left
	if l.killed {
		p.log.Error("processes left in its group survived SIGKILL; going on without them", "pgid", l.pgid, "pids", groupMembers(l.pgid))
		p.leftoversGone()
		return
	}
	p.log.Warn("processes left in its group did not stop in time, sending SIGKILL", "pgid", l.pgid, "stopwait", p.spec.StopWait)
	if err := signalGroup(l.pgid, syscall.SIGKILL, true); err != nil {
		p.log.Error("kill", "err", err)
	}
	l.killed = true
	if l.held {
		p.setNote(fmt.Sprintf("killed what was left of process group %d after stopwaitsecs", l.pgid))
	}
	l.timer.Reset(killWait)
}

// holdUntilGone holds a stop back until the leftovers of an earlier exit,
// still finishing their calls, are gone too: STOPPED means nothing of the
// program runs.
func (p *program) holdUntilGone(code int) {
	l := p.left
	l.held, l.from, l.code = true, Stopping, code
	p.setState(Stopping, fmt.Sprintf("waiting for the processes left in process group %d (SIGKILL at the end of stopwaitsecs)", l.pgid))
}

// dropDraining kills leftovers of an earlier exit that are still finishing
// their calls when the next main process exits too: they have had their
// stop signal, and there is one set of leftovers at a time.
func (p *program) dropDraining() {
	l := p.left
	if l == nil {
		return
	}
	p.log.Warn("processes left by the previous exit still running, sending SIGKILL", "pgid", l.pgid, "pids", groupMembers(l.pgid))
	_ = signalGroup(l.pgid, syscall.SIGKILL, true)
	l.cancel()
	l.timer.Stop()
	p.left = nil
}

// afterExit acts on an exit that came in state from, once the process's
// group is gone.
func (p *program) afterExit(from State, code int) {
	switch from {
	case Stopping:
		if p.left != nil {
			p.holdUntilGone(code)
			return
		}
		p.setState(Stopped, "")
		if p.restartAfterStop {
			p.restartAfterStop = false
			p.wantStart()
		}
	case Starting:
		p.failedStart()
	case Running:
		if p.wantUp && p.spec.restartsAfter(code) {
			p.log.Info("restarting", "autorestart", p.spec.Autorestart)
			p.startProcess()
			return
		}
		p.wantUp = false
		p.setState(Exited, "")
	}
}

// sendStop sends the stop signal to the process group and arms the
// stopwaitsecs timer that escalates to SIGKILL.
func (p *program) sendStop() {
	p.cancelTimer()
	if err := signalGroup(p.proc.pid, p.spec.StopSignal, true); err != nil {
		p.log.Error("stop", "err", err)
	}
	p.setState(Stopping, "")
	p.startTimer(p.spec.StopWait, timerStopWait)
}

// abandon runs when the loop is cancelled; the supervisor has stopped the
// program already, so this only matters if something went wrong.
func (p *program) abandon() {
	p.cancelTimer()
	p.dropDraining()
	if p.proc == nil {
		return
	}
	p.log.Error("still running at exit, killing its process group")
	_ = signalGroup(p.proc.pid, syscall.SIGKILL, true)
	<-p.exits
	p.proc = nil
}

func (p *program) startTimer(d time.Duration, kind timerKind) {
	p.cancelTimer()
	t := time.NewTimer(d)
	p.timerC, p.stopTimer = t.C, t.Stop
	p.timerKind = kind
}

func (p *program) cancelTimer() {
	if p.stopTimer != nil {
		p.stopTimer()
	}
	p.timerC, p.stopTimer, p.timerKind = nil, nil, timerNone
}

func (p *program) openLog() {
	if p.spec.LogFile == "" {
		return
	}
	f, err := openRotatingFile(p.spec.LogFile, p.spec.LogMaxBytes, p.spec.LogBackups)
	if err != nil {
		p.log.Error("log file", "err", err)
		return
	}
	p.logFile = f
}

func (p *program) closeLog() {
	if p.logFile != nil {
		p.logFile.Close()
		p.logFile = nil
	}
}

// setState publishes a transition: status, metrics, PID watchers, then
// wakes everyone waiting for a change. No lock is held while notifying.
func (p *program) setState(st State, note string) { p.publish(st, note, false) }

func (p *program) publish(st State, note string, waiting bool) {
	p.mu.Lock()
	from := p.pub.State
	p.pub.State, p.pub.Note, p.pub.Waiting = st, note, waiting
	if !st.up() {
		p.pub.PID, p.pub.Since = 0, time.Time{}
	}
	pid := p.pub.PID
	p.mu.Unlock()
	if from != st {
		p.log.Info("state", "from", from, "to", st, "pid", pid, "note", note)
	}
	if p.sup.onTransition != nil && (from != st || p.reportedPID != pid) {
		p.sup.onTransition(Transition{Program: p.name, From: from, To: st, PID: pid, At: time.Now()})
	}
	p.reportedPID = pid
	p.sup.metrics.setState(p.spec.Name, st)
	p.sup.publishPID(p.spec.Name, pid)
	p.sup.changes.notify()
}

// setWaiting shows the program STOPPED, waiting for what why says.
func (p *program) setWaiting(why string) {
	p.mu.Lock()
	same := p.pub.State == Stopped && p.pub.Waiting && p.pub.Note == why
	p.mu.Unlock()
	if same {
		return // no news: no wake-up, or waiters would spin
	}
	p.publish(Stopped, why, true)
}

func (p *program) setNote(note string) {
	p.mu.Lock()
	changed := p.pub.Note != note
	p.pub.Note = note
	p.mu.Unlock()
	if changed {
		p.sup.changes.notify()
	}
}

// lastWords is ": " and the last line the last process wrote, if any.
func (p *program) lastWords() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pub.LastExit == nil || p.pub.LastExit.Output == "" {
		return ""
	}
	return ": " + p.pub.LastExit.Output
}

func (p *program) setExit(e *Exit) {
	p.mu.Lock()
	p.pub.LastExit = e
	p.mu.Unlock()
}

func (p *program) status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.pub
	if s.LastExit != nil {
		e := *s.LastExit
		s.LastExit = &e
	}
	return s
}

// ask sends r to the loop and returns its answer; it never holds a lock.
func (p *program) ask(ctx context.Context, r request) error {
	r.reply = make(chan error, 1)
	select {
	case p.reqs <- r:
	case <-p.done:
		return fmt.Errorf("%s: %w", p.name, ErrSupervisorDone)
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-r.reply
}
