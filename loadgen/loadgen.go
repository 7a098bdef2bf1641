// Package loadgen drives gRPC load through a load balancer on loopback:
// many concurrent clients, each on its own connection (or all multiplexed on
// one, with SharedConn), making unary SayHello calls, plus long-lived StreamHellos server streams. It counts successes and
// failures per answering instance, and streams that broke.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lbctl/lbctl/greeter"
	"github.com/lbctl/lbctl/greeter/greeterpb"
)

// Options bound and shape the load.
type Options struct {
	// Target is host:port; the host must be a loopback address or localhost,
	// unless Dial is set.
	Target string
	// Dial, when set, opens every connection (grpc.WithContextDialer), and
	// then Target may be any address: the dialer decides what it can reach
	// (package hosts dials from inside a test's network namespace).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Clients is how many unary callers run, each on its own connection.
	Clients int
	// SharedConn puts every unary caller on one connection instead, so it
	// carries Clients concurrent calls at a time (HTTP/2 streams).
	SharedConn bool
	// Streams is how many StreamHellos streams are held open, each on its own connection.
	Streams int
	// Calls stops the unary callers after this many calls in all (0: no bound).
	Calls int64
	// Duration stops everything after this long (0: only ctx or Calls stop it).
	Duration time.Duration
	// CallTimeout bounds each unary call (default 5s).
	CallTimeout time.Duration
	// StreamInterval is the server's interval between stream messages (default 20ms).
	StreamInterval time.Duration
	// DelayMs makes the server hold each unary call this long.
	DelayMs uint32
	// OnAnswer, if set, is called after each successful unary call with the
	// time the call was sent and the instance that answered it. It must be
	// safe for concurrent use.
	OnAnswer func(sent time.Time, instance string)
}

// Report is what the load saw.
type Report struct {
	Calls, Failures int64
	// ByInstance counts successful unary calls per answering instance.
	ByInstance map[string]int64
	// Errors counts failed calls by gRPC code and message.
	Errors map[string]int64
	// Streams is how many streams were opened; StreamsBroken how many ended
	// with an error other than the load stopping.
	Streams, StreamsBroken int64
	// StreamMessages counts stream messages received.
	StreamMessages int64
	Elapsed        time.Duration
}

// Gen is one load run; Snapshot may be read while Run runs.
type Gen struct {
	opts Options

	calls, failures, streams, broken, messages atomic.Int64
	mu                                         sync.Mutex
	byInstance, errs                           map[string]int64
	started                                    time.Time
}

// New checks opts and returns a Gen.
func New(opts Options) (*Gen, error) {
	host, _, err := net.SplitHostPort(opts.Target)
	if err != nil {
		return nil, fmt.Errorf("loadgen target %q: %w", opts.Target, err)
	}
	if ip := net.ParseIP(host); opts.Dial == nil && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("loadgen target %q: only loopback targets are allowed", opts.Target)
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	if opts.StreamInterval <= 0 {
		opts.StreamInterval = 20 * time.Millisecond
	}
	return &Gen{opts: opts, byInstance: map[string]int64{}, errs: map[string]int64{}}, nil
}

// Run drives the load until ctx ends, Duration passes or Calls are made,
// then waits for in-flight calls (which are not cancelled) and returns the report.
func (g *Gen) Run(ctx context.Context) (Report, error) {
	g.mu.Lock()
	g.started = time.Now()
	g.mu.Unlock()
	if g.opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.opts.Duration)
		defer cancel()
	}
	var wg sync.WaitGroup
	dial := g.dial
	if g.opts.SharedConn && g.opts.Clients > 0 {
		conn, client, err := g.connect()
		if err != nil {
			g.fail(err)
			return g.Snapshot(), nil
		}
		defer conn.Close()
		dial = func() (greeterpb.GreeterClient, func(), error) { return client, func() {}, nil }
	}
	for range g.opts.Clients {
		wg.Go(func() { g.unaryClient(ctx, dial) })
	}
	for range g.opts.Streams {
		wg.Go(func() { g.stream(ctx) })
	}
	wg.Wait()
	return g.Snapshot(), nil
}

// Snapshot is the report so far.
func (g *Gen) Snapshot() Report {
	g.mu.Lock()
	defer g.mu.Unlock()
	return Report{
		Calls: g.calls.Load(), Failures: g.failures.Load(),
		ByInstance: maps.Clone(g.byInstance), Errors: maps.Clone(g.errs),
		Streams: g.streams.Load(), StreamsBroken: g.broken.Load(), StreamMessages: g.messages.Load(),
		Elapsed: time.Since(g.started),
	}
}

// connect opens one connection to the target, through Options.Dial when set.
func (g *Gen) connect() (*grpc.ClientConn, greeterpb.GreeterClient, error) {
	if g.opts.Dial != nil {
		return greeter.Dial(g.opts.Target, grpc.WithContextDialer(g.opts.Dial))
	}
	return greeter.Dial(g.opts.Target)
}

// dial opens a unary caller's own connection; done closes it.
func (g *Gen) dial() (client greeterpb.GreeterClient, done func(), err error) {
	conn, client, err := g.connect()
	if err != nil {
		return nil, nil, err
	}
	return client, func() { conn.Close() }, nil
}

func (g *Gen) unaryClient(ctx context.Context, dial func() (greeterpb.GreeterClient, func(), error)) {
	client, done, err := dial()
	if err != nil {
		g.fail(err)
		return
	}
	defer done()
	for ctx.Err() == nil {
		if n := g.calls.Add(1); g.opts.Calls > 0 && n > g.opts.Calls {
			g.calls.Add(-1)
			return
		}
		g.call(client)
	}
}

// call makes one unary call; it is not tied to the load's ctx, so stopping
// the load never fails a call that was already sent.
func (g *Gen) call(client greeterpb.GreeterClient) {
	cctx, cancel := context.WithTimeout(context.Background(), g.opts.CallTimeout)
	defer cancel()
	sent := time.Now()
	reply, err := client.SayHello(cctx, &greeterpb.HelloRequest{Name: "loadgen", DelayMs: g.opts.DelayMs})
	if err != nil {
		g.fail(err)
		return
	}
	g.mu.Lock()
	g.byInstance[reply.GetInstance()]++
	g.mu.Unlock()
	if g.opts.OnAnswer != nil {
		g.opts.OnAnswer(sent, reply.GetInstance())
	}
}

func (g *Gen) fail(err error) {
	g.failures.Add(1)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.errs[describe(err)]++
}

func (g *Gen) stream(ctx context.Context) {
	conn, client, err := g.connect()
	if err != nil {
		g.brokenStream(err)
		return
	}
	defer conn.Close()
	g.streams.Add(1)
	st, err := client.StreamHellos(ctx, &greeterpb.StreamRequest{
		Name: "loadgen", IntervalMs: uint32(g.opts.StreamInterval.Milliseconds())})
	if err != nil {
		g.endStream(ctx, err)
		return
	}
	for {
		if _, err := st.Recv(); err != nil {
			g.endStream(ctx, err)
			return
		}
		g.messages.Add(1)
	}
}

// endStream counts a stream that ended for any reason but the load stopping as broken.
func (g *Gen) endStream(ctx context.Context, err error) {
	if ctx.Err() != nil && status.Code(err) == codes.Canceled {
		return
	}
	g.brokenStream(err)
}

func (g *Gen) brokenStream(err error) {
	g.broken.Add(1)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.errs["stream: "+describe(err)]++
}

func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String() + ": " + s.Message()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "deadline exceeded"
	}
	return err.Error()
}

// Start runs the load in the background until the returned stop is called;
// stop ends it, waits for the calls in flight and returns the report. Calling
// stop again returns the same report.
func (g *Gen) Start() (stop func() Report) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Report, 1)
	go func() { rep, _ := g.Run(ctx); done <- rep }()
	var once sync.Once
	var rep Report
	return func() Report {
		once.Do(func() { cancel(); rep = <-done })
		return rep
	}
}
