package main

import "fmt"

// usageErrorf is an error in how the command was called (exit code 2).
func usageErrorf(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}
