package appctl

import (
	"testing"

	"github.com/lbctl/lbctl/supervisor"
)

func TestExitCodeOfTheApp(t *testing.T) {
	cases := []struct {
		exit *supervisor.Exit
		want int
	}{
		{nil, 1},
		{&supervisor.Exit{Code: 0}, 0},
		{&supervisor.Exit{Code: 7}, 7},
		{&supervisor.Exit{Code: -1, Signal: "TERM"}, 128 + 15},
		{&supervisor.Exit{Code: -1, Signal: "KILL"}, 128 + 9},
		{&supervisor.Exit{Code: -1, Signal: "NOSUCH"}, 1},
		{&supervisor.Exit{Code: -1, Err: "exec: no such file"}, 127},
	}
	for _, c := range cases {
		if got := exitCode(c.exit); got != c.want {
			t.Errorf("exitCode(%+v) = %d, want %d", c.exit, got, c.want)
		}
	}
}
