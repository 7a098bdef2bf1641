package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every command gives the same code for the same kind of mistake.
func TestExitCodesAgreeAcrossCommands(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "lbctl.yaml")
	if err := os.WriteFile(bad, []byte("bogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"validate", "-c", bad}, exitConfig},
		{[]string{"render", "--dry-run", "-c", bad}, exitConfig},
		{[]string{"shift", "greeter", "--to", "green", "-c", bad}, exitConfig},
		{[]string{"status", "-c", bad}, exitConfig},
		{[]string{"shift"}, exitUsage},
		{[]string{"shift", "status"}, exitUsage},
		{[]string{"maint"}, exitUsage},
		{[]string{"validate", "extra"}, exitUsage},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"validate", "--no-such-flag"}, exitUsage},
	} {
		_, err := runLbctl(context.Background(), tc.args...)
		if got := exitCode(err); got != tc.want {
			t.Errorf("lbctl %s: exit %d (%v), want %d", strings.Join(tc.args, " "), got, err, tc.want)
		}
	}
}

// The one table of exit codes is in lbctl --help and in the README.
func TestExitCodeTableIsDocumented(t *testing.T) {
	help, err := runLbctl(context.Background(), "--help")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range exitCodes {
		if row := fmt.Sprintf("| %s | %s |", c.code, c.meaning); !strings.Contains(string(readme), row) {
			t.Errorf("README.md lacks the row %q", row)
		}
		if !strings.Contains(help, c.meaning) {
			t.Errorf("lbctl --help lacks exit code %s: %q", c.code, c.meaning)
		}
	}
}
