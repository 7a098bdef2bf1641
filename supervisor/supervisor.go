package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/internal/latest"
	"github.com/lbctl/lbctl/metrics"
)

// Options are a Supervisor's dependencies; every field may be left zero.
type Options struct {
	Logger *slog.Logger
	// Stdout and Stderr receive the programs' output, one prefixed line at a
	// time (default os.Stdout and os.Stderr).
	Stdout, Stderr io.Writer
	// Registerer gets the program metrics; nil registers none. Supervisors
	// sharing one registry share the metrics.
	Registerer *metrics.Registry
	// Rand returns a number in [0,1) for backoff jitter.
	Rand func() float64
	// OnTransition, when set, is called after every state change, from the
	// program's own goroutine with no lock held. It must not block for long:
	// it holds up that program.
	OnTransition func(Transition)
}

// Transition is one state change of one program.
type Transition struct {
	Program  string
	From, To State
	PID      int // the process's pid (0 when it has none)
	At       time.Time
}

// Supervisor runs programs the way supervisord does, reacting to each exit
// the moment Wait returns. Create it with New, then Run it.
type Supervisor struct {
	log            *slog.Logger
	stdout, stderr *lockedWriter
	rand           func() float64
	metrics        *programMetrics
	changes        broadcast
	onTransition   func(Transition)

	// applyMu serialises Apply and the shutdown at the end of Run.
	applyMu sync.Mutex

	mu           sync.Mutex
	programs     map[string]*program
	order        []string // start order; stopped in reverse
	cancels      map[string]context.CancelFunc
	gates        map[string]bool
	pidWatch     map[string][]chan int
	lastPID      map[string]int
	beforeStart  map[string]func() (Extras, error)
	running      bool
	shuttingDown bool          // Run is stopping everything
	done         chan struct{} // closed when Run returns
}

// New checks programs (unique names, known dependencies, no cycles) and
// returns a Supervisor that starts them when Run is called.
func New(programs []Program, opts Options) (*Supervisor, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Rand == nil {
		opts.Rand = defaultRand
	}
	order, err := checkPrograms(programs)
	if err != nil {
		return nil, err
	}
	s := &Supervisor{
		log:          opts.Logger.With("component", "supervisor"),
		stdout:       &lockedWriter{w: opts.Stdout},
		stderr:       &lockedWriter{w: opts.Stderr},
		rand:         opts.Rand,
		metrics:      newMetrics(opts.Registerer),
		onTransition: opts.OnTransition,
		changes:      newBroadcast(),
		programs:     map[string]*program{},
		cancels:      map[string]context.CancelFunc{},
		gates:        map[string]bool{},
		pidWatch:     map[string][]chan int{},
		lastPID:      map[string]int{},
		done:         make(chan struct{}),
	}
	byName := map[string]Program{}
	for _, p := range programs {
		byName[p.Name] = p
	}
	for _, name := range order {
		s.programs[name] = newProgram(s, byName[name])
	}
	s.order = order
	return s, nil
}

// checkPrograms validates a set of programs and returns their start order:
// dependencies first, otherwise as given.
func checkPrograms(programs []Program) ([]string, error) {
	var errs []error
	seen := map[string]bool{}
	for _, p := range programs {
		switch {
		case p.Name == "":
			errs = append(errs, errors.New("a program has no name"))
		case seen[p.Name]:
			errs = append(errs, fmt.Errorf("program %s: defined twice", p.Name))
		case len(p.Command) == 0:
			errs = append(errs, fmt.Errorf("program %s: no command", p.Name))
		}
		seen[p.Name] = true
	}
	cfgs := make([]config.Program, len(programs))
	for i, p := range programs {
		for _, d := range p.DependsOn {
			if !seen[d] {
				errs = append(errs, fmt.Errorf("program %s: depends_on %s: %w", p.Name, d, ErrUnknownProgram))
			}
		}
		cfgs[i] = config.Program{Name: p.Name, DependsOn: p.DependsOn}
	}
	if cycle := config.DependencyCycle(cfgs); cycle != nil {
		errs = append(errs, fmt.Errorf("depends_on cycle: %s", strings.Join(cycle, " -> ")))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return startOrder(programs), nil
}

// startOrder places each program after its dependencies, keeping the given
// order otherwise. Programs must be free of cycles.
func startOrder(programs []Program) []string {
	placed := map[string]bool{}
	var order []string
	for len(order) < len(programs) {
		for _, p := range programs {
			if placed[p.Name] {
				continue
			}
			if !slices.ContainsFunc(p.DependsOn, func(d string) bool { return !placed[d] }) {
				placed[p.Name] = true
				order = append(order, p.Name)
				break
			}
		}
	}
	return order
}

// EssentialError is Run's error when an essential program went FATAL, or
// exited with no restart to come.
type EssentialError struct {
	Program string
	State   State
	Exit    *Exit
}

func (e *EssentialError) Error() string {
	msg := fmt.Sprintf("essential program %s is %s", e.Program, e.State)
	if e.Exit != nil && e.Exit.String() != "" {
		msg += " (last " + e.Exit.String() + ")"
	}
	return msg
}

// Run starts the programs (autostart ones, dependencies first) and
// supervises them until ctx is cancelled or an essential program fails.
// Either way it then stops every program in reverse start order, each with
// its stop signal and stopwaitsecs, and returns: nil after cancellation, an
// *EssentialError after a failure. Run may be called once.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("supervisor: Run called twice")
	}
	s.running = true
	for _, name := range s.order {
		s.launchLocked(s.programs[name])
	}
	s.mu.Unlock()
	defer close(s.done)

	err := s.watchEssential(ctx)
	if err != nil {
		s.log.Error("stopping everything", "err", err)
	} else {
		s.log.Info("shutting down")
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	s.shuttingDown = true // under applyMu: no Apply adds programs from here on
	order := slices.Clone(s.order)
	s.mu.Unlock()
	for _, name := range slices.Backward(order) {
		s.remove(name)
	}
	return err
}

// launchLocked starts p's loop; s.mu is held.
func (s *Supervisor) launchLocked(p *program) {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancels[p.name] = cancel
	go p.loop(ctx)
}

// watchEssential waits for ctx or for an essential program to fail.
func (s *Supervisor) watchEssential(ctx context.Context) error {
	for {
		changed := s.changes.wait()
		if err := s.essentialFailure(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func (s *Supervisor) essentialFailure() error {
	for _, p := range s.snapshot() {
		if !p.spec.Essential {
			continue
		}
		st := p.status()
		if st.State == Fatal || st.State == Exited {
			return &EssentialError{Program: p.name, State: st.State, Exit: st.LastExit}
		}
	}
	return nil
}

// snapshot is the programs in start order.
func (s *Supervisor) snapshot() []*program {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*program, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, s.programs[n])
	}
	return out
}

func (s *Supervisor) lookup(name string) (*program, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.programs[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, ErrUnknownProgram)
	}
	return p, nil
}

// Start starts a STOPPED, EXITED or FATAL program (a BACKOFF one at once)
// and waits until it is RUNNING, or fails to start (BACKOFF, FATAL). A
// program that must wait for its dependencies or gates is left waiting and
// Start returns nil at once: Status says what it waits for.
func (s *Supervisor) Start(ctx context.Context, name string) error {
	p, err := s.lookup(name)
	if err != nil {
		return err
	}
	if err := p.ask(ctx, request{kind: reqStart}); err != nil {
		return err
	}
	return s.waitState(ctx, p, func(st Status) (bool, error) {
		switch st.State {
		case Running:
			return true, nil
		case Stopped:
			return st.Waiting, nil
		case Backoff, Fatal, Exited:
			return true, fmt.Errorf("start %s: %s (%s)", name, st.State, exitText(st))
		}
		return false, nil
	})
}

// Stop stops a program (its stop signal, SIGKILL after stopwaitsecs) and
// waits until it has exited. Stopping a program that is not running is not an error.
func (s *Supervisor) Stop(ctx context.Context, name string) error {
	p, err := s.lookup(name)
	if err != nil {
		return err
	}
	return s.stop(ctx, p)
}

func (s *Supervisor) stop(ctx context.Context, p *program) error {
	if err := p.ask(ctx, request{kind: reqStop}); err != nil {
		return err
	}
	return s.waitState(ctx, p, func(st Status) (bool, error) { return !st.State.up(), nil })
}

// Restart stops the program, then starts it.
func (s *Supervisor) Restart(ctx context.Context, name string) error {
	if err := s.Stop(ctx, name); err != nil {
		return err
	}
	return s.Start(ctx, name)
}

// Signal sends sig to the program's main process (not its group).
func (s *Supervisor) Signal(ctx context.Context, name string, sig syscall.Signal) error {
	p, err := s.lookup(name)
	if err != nil {
		return err
	}
	return p.ask(ctx, request{kind: reqSignal, sig: sig})
}

// Forward sends sig to every running program that lists it in ForwardSignals.
func (s *Supervisor) Forward(ctx context.Context, sig syscall.Signal) {
	for _, p := range s.snapshot() {
		if !slices.Contains(p.spec.ForwardSignals, sig) {
			continue
		}
		if err := p.ask(ctx, request{kind: reqSignal, sig: sig}); err != nil && !errors.Is(err, ErrNotRunning) {
			s.log.Warn("forward signal", "program", p.name, "signal", signalName(sig), "err", err)
		}
	}
}

// ForwardedSignals is every signal some program wants forwarded.
func (s *Supervisor) ForwardedSignals() []syscall.Signal {
	var out []syscall.Signal
	for _, p := range s.snapshot() {
		for _, sig := range p.spec.ForwardSignals {
			if !slices.Contains(out, sig) {
				out = append(out, sig)
			}
		}
	}
	return out
}

// waitState waits until done says so for p's status.
func (s *Supervisor) waitState(ctx context.Context, p *program, done func(Status) (bool, error)) error {
	for {
		changed := s.changes.wait()
		if ok, err := done(p.status()); ok {
			return err
		}
		select {
		case <-changed:
		case <-p.done:
			return fmt.Errorf("%s: %w", p.name, ErrSupervisorDone)
		case <-ctx.Done():
			return fmt.Errorf("%s is %s: %w", p.name, p.status().State, ctx.Err())
		}
	}
}

func exitText(st Status) string {
	if st.LastExit == nil {
		return st.Note
	}
	if st.Note == "" {
		return st.LastExit.String()
	}
	return st.LastExit.String() + "; " + st.Note
}

// Status is every program's status, in start order.
func (s *Supervisor) Status() []Status {
	var out []Status
	for _, p := range s.snapshot() {
		out = append(out, p.status())
	}
	return out
}

// StatusOf is one program's status.
func (s *Supervisor) StatusOf(name string) (Status, error) {
	p, err := s.lookup(name)
	if err != nil {
		return Status{}, err
	}
	return p.status(), nil
}

// PID is the program's current process id, 0 when it has none.
func (s *Supervisor) PID(name string) int {
	p, err := s.lookup(name)
	if err != nil {
		return 0
	}
	return p.status().PID
}

// WatchPID returns a channel that receives the program's pid now and
// whenever it changes (0 while it has no process). Only the newest value
// waits in the channel: a slow reader skips to the latest pid. The program
// need not exist yet (a later Apply may add it).
func (s *Supervisor) WatchPID(name string) <-chan int {
	ch := make(chan int, 1)
	s.mu.Lock()
	s.pidWatch[name] = append(s.pidWatch[name], ch)
	ch <- s.lastPID[name]
	s.mu.Unlock()
	return ch
}

func (s *Supervisor) publishPID(name string, pid int) {
	s.mu.Lock()
	if s.lastPID[name] == pid {
		s.mu.Unlock()
		return
	}
	s.lastPID[name] = pid
	watchers := slices.Clone(s.pidWatch[name])
	s.mu.Unlock()
	for _, ch := range watchers {
		_ = latest.Send(context.Background(), ch, pid) // capacity 1: never blocks
	}
}

// Extras are what one start of a program gets besides its Program.
type Extras struct {
	// Files are open files the process gets as fds 3, 4, ... in this order.
	// They stay the caller's: the supervisor neither closes nor keeps them.
	Files []*os.File
	// Env is added to its environment after Program.Env ("KEY=VALUE").
	Env []string
}

// BeforeStart makes hook run before every start of the named program, the
// restarts after a crash included; the process gets the Extras it returns.
// An error is a failed start (BACKOFF), with the error as the exit's reason.
// lbctl run hands nginx the listening sockets it holds this way. A
// listening socket the caller still holds when the process exits stays
// open whatever the process's leftovers do, so the next start does not wait
// for them to close it (listeners.go).
func (s *Supervisor) BeforeStart(name string, hook func() (Extras, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.beforeStart == nil {
		s.beforeStart = map[string]func() (Extras, error){}
	}
	s.beforeStart[name] = hook
}

// runBeforeStart runs name's BeforeStart hook, if any.
func (s *Supervisor) runBeforeStart(name string) (Extras, error) {
	s.mu.Lock()
	hook := s.beforeStart[name]
	s.mu.Unlock()
	if hook == nil {
		return Extras{}, nil
	}
	extras, err := hook()
	if err != nil {
		return Extras{}, fmt.Errorf("before start: %w", err)
	}
	return extras, nil
}

// OpenGate opens a readiness gate: programs waiting for it may start.
// Opening an open gate does nothing.
func (s *Supervisor) OpenGate(name string) {
	s.mu.Lock()
	already := s.gates[name]
	s.gates[name] = true
	s.mu.Unlock()
	if !already {
		s.log.Info("gate open", "gate", name)
		s.changes.notify()
	}
}

// notReady says what spec still waits for ("" when it can start).
func (s *Supervisor) notReady(spec *Program) string {
	for _, g := range spec.Gates {
		s.mu.Lock()
		open := s.gates[g]
		s.mu.Unlock()
		if !open {
			return "waiting for gate " + g
		}
	}
	for _, d := range spec.DependsOn {
		p, err := s.lookup(d)
		if err != nil {
			return "waiting for " + d + " (not configured)"
		}
		if st := p.status().State; st != Running {
			return fmt.Sprintf("waiting for %s (%s)", d, st)
		}
	}
	return ""
}

// Changes returns a channel closed at the next state change of any program
// (or gate). Take it before checking a condition, then wait on it.
func (s *Supervisor) Changes() <-chan struct{} { return s.changes.wait() }

// Apply makes the running set of programs match programs (lbctl's SIGHUP):
// removed programs are stopped and dropped, changed ones are stopped and
// started again with their new spec (if autostart), new ones are added,
// unchanged ones are left running. Programs are stopped in reverse start
// order and started in start order.
func (s *Supervisor) Apply(ctx context.Context, programs []Program) error {
	order, err := checkPrograms(programs)
	if err != nil {
		return err
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	usable := s.running && !s.shuttingDown
	oldOrder := slices.Clone(s.order)
	s.mu.Unlock()
	if !usable {
		return ErrSupervisorDone
	}
	byName := map[string]Program{}
	for _, p := range programs {
		byName[p.Name] = p
	}
	for _, name := range slices.Backward(oldOrder) {
		next, keep := byName[name]
		p, _ := s.lookup(name)
		if keep && p.spec.equal(&next) {
			continue
		}
		s.log.Info("config changed, stopping", "program", name, "removed", !keep)
		s.remove(name)
	}
	s.mu.Lock()
	for _, name := range order {
		if _, exists := s.programs[name]; !exists {
			p := newProgram(s, byName[name])
			s.programs[name] = p
			s.launchLocked(p)
		}
	}
	s.order = order
	s.mu.Unlock()
	s.changes.notify()
	return nil
}

// remove stops a program, ends its loop and forgets it.
func (s *Supervisor) remove(name string) {
	p, err := s.lookup(name)
	if err != nil {
		return
	}
	if err := s.stop(context.Background(), p); err != nil {
		s.log.Error("stop", "program", name, "err", err)
	}
	s.mu.Lock()
	cancel := s.cancels[name]
	delete(s.cancels, name)
	s.mu.Unlock()
	cancel()
	<-p.done
	s.mu.Lock()
	delete(s.programs, name)
	s.order = slices.DeleteFunc(s.order, func(n string) bool { return n == name })
	s.mu.Unlock()
	s.metrics.forget(name)
	s.changes.notify()
}

// broadcast wakes every waiter at once: wait returns a channel that is
// closed by the next notify. Nothing ever blocks sending on it.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() broadcast { return broadcast{ch: make(chan struct{})} }

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) notify() {
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
}

func signalName(sig syscall.Signal) string { return config.SignalName(sig) }
