package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// process is one running instance of a program.
type process struct {
	cmd *exec.Cmd
	pid int
	// output is closed once both output pipes reached EOF.
	output chan struct{}
	// lastOut and lastErr are the last lines it wrote on each stream.
	lastOut, lastErr *lastLine
}

// lastWords is the last line the process wrote on stderr, or else on
// stdout: where programs say why they fail.
func (pr *process) lastWords() string {
	if s := pr.lastErr.get(); s != "" {
		return s
	}
	return pr.lastOut.get()
}

// outputDrainBound is how long an exit waits for the process's last output
// lines: they normally arrive microseconds after it exits, unless a
// grandchild inherited the pipes and keeps them open.
const outputDrainBound = 100 * time.Millisecond

// wait waits for the process to exit, then (bounded) for its last output
// lines, so a crashing program's last words are logged before its exit is.
// When its process group outlives it, whatever is left holds the pipes and
// the exit is reported at once: the leftovers must be ended without delay.
func (pr *process) wait() error {
	err := pr.cmd.Wait()
	select {
	case <-pr.output:
		return err
	default:
	}
	if groupExists(pr.pid) {
		return err
	}
	t := time.NewTimer(outputDrainBound)
	defer t.Stop()
	select {
	case <-pr.output:
	case <-t.C:
	}
	return err
}

// spawn starts p's command in its own process group, with extras' files and
// environment, its stdout and stderr copied line by line to out/errOut (and
// logFile). Only the pipes' read ends stay open in lbctl, so exec.Cmd starts
// no copying goroutines of its own and Wait returns the moment the process
// exits, even if a grandchild still holds the pipe. The program starts with
// default signal dispositions, whatever lbctl inherited.
func spawn(p *Program, extras Extras, out, errOut *lockedWriter, logFile *rotatingFile) (*process, error) {
	defaultDispositions()
	cmd := exec.Command(p.Command[0], p.Command[1:]...)
	cmd.Env = slices.Concat(os.Environ(), p.Env, extras.Env)
	cmd.ExtraFiles = extras.Files
	cmd.Dir = p.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.User != "" {
		cred, err := credential(p.User)
		if err != nil {
			return nil, err
		}
		cmd.SysProcAttr.Credential = cred
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	prefix := p.Name + " | "
	var copying sync.WaitGroup
	lastOut, lastErr := &lastLine{}, &lastLine{}
	copying.Go(func() { copyLines(outR, prefix, out, logFile, lastOut); outR.Close() })
	copying.Go(func() { copyLines(errR, prefix, errOut, logFile, lastErr); errR.Close() })
	output := make(chan struct{})
	go func() { copying.Wait(); close(output) }()
	return &process{cmd: cmd, pid: cmd.Process.Pid, output: output, lastOut: lastOut, lastErr: lastErr}, nil
}

// credential looks up a user name or numeric uid.
func credential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if _, numErr := strconv.Atoi(name); numErr == nil && errors.As(err, &unknown) {
			u, err = user.LookupId(name)
		}
		if err != nil {
			return nil, fmt.Errorf("user %s: %w", name, err)
		}
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	return cred, nil
}

// exitOf reads how a process ended from Wait's error.
func exitOf(err error) (code int, signal string) {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -1, signalName(ws.Signal())
		}
		return ee.ExitCode(), ""
	}
	if err != nil {
		return -1, ""
	}
	return 0, ""
}

// signalGroup sends sig to the process group led by pid (to pid alone when
// group is false). A group already gone is not an error.
func signalGroup(pid int, sig syscall.Signal, group bool) error {
	target := pid
	if group {
		target = -pid
	}
	if err := syscall.Kill(target, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("send %s to %d: %w", signalName(sig), target, err)
	}
	return nil
}
