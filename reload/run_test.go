package reload

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lbctl/lbctl/config"
	"github.com/lbctl/lbctl/render"
)

// Run on synctest's clock: updates inside wait.min fold into one apply,
// which happens exactly min after the last of them, and only once.
func TestRunFoldsUpdatesWithinMin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "lbctl.conf")
		if err := os.WriteFile(dest, []byte("# live\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		applied := make(chan uint64, 10)
		ctl := New(Options{
			Nginx:     config.Nginx{Binary: "nginx-is-not-needed", Config: dest},
			Wait:      config.Wait{Min: 20 * time.Millisecond, Max: time.Second},
			OnApplied: func(u render.Update) { applied <- u.Index },
		})
		updates := make(chan render.Update) // unbuffered: a send returns once Run has it
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ctl.Run(ctx, updates) }()
		defer func() { cancel(); <-done }()

		// Byte-equal to the live file: each apply is "unchanged" and reports its index.
		same := func(i uint64) render.Update {
			return render.Update{Index: i, Files: []render.File{{Path: dest, Data: []byte("# live\n"), Source: "builtin"}}}
		}
		for i := uint64(1); i <= 3; i++ {
			if i > 1 {
				time.Sleep(5 * time.Millisecond)
			}
			updates <- same(i)
		}
		// Each update moved the quiet period's end: it is min after the last one.
		time.Sleep(20*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		select {
		case i := <-applied:
			t.Fatalf("applied index %d before the quiet period ended", i)
		default:
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		select {
		case i := <-applied:
			if i != 3 {
				t.Fatalf("applied index %d, want 3 (the newest)", i)
			}
		default:
			t.Fatal("no apply when the quiet period ended")
		}
		time.Sleep(2 * time.Second) // past wait.max
		synctest.Wait()
		select {
		case i := <-applied:
			t.Fatalf("a second apply (index %d) for one burst", i)
		default:
		}
	})
}

func TestOnAppliedGetsTheAppliedUpdate(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "lbctl.conf")
	if err := os.WriteFile(dest, []byte("# live\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := make(chan render.Update, 1)
	ctl := New(Options{Nginx: config.Nginx{Config: dest}, OnApplied: func(u render.Update) { got <- u }})
	u := render.Update{Index: 7, Files: []render.File{{Path: dest, Data: []byte("# live\n")}}}
	if _, err := ctl.Apply(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	if (<-got).Index != 7 {
		t.Fatal("OnApplied did not get the update")
	}
}

// Only an apply that sent SIGHUP makes the next one keep wait.between_reloads.
func TestOnlyReloadsThatSignalledNginxCountForTheGap(t *testing.T) {
	if !signalled(Result{Outcome: Applied}) || !signalled(Result{Outcome: TimedOut}) {
		t.Fatal("an applied or unconfirmed reload must count for the gap")
	}
	for _, o := range []Outcome{Unchanged, Rejected, Failed, Written} {
		if signalled(Result{Outcome: o}) {
			t.Fatalf("outcome %s sent no SIGHUP but counts for the gap", o)
		}
	}
}
