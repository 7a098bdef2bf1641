// Package latest sends state that only matters in its newest form: a reader
// that falls behind skips intermediate values but always gets the newest one,
// and the sender never blocks behind a stale value.
package latest

import "context"

// Send puts v on ch (capacity 1), replacing an unread older value. With an
// unbuffered ch it blocks until a reader takes v or ctx ends.
func Send[T any](ctx context.Context, ch chan T, v T) error {
	for {
		select {
		case ch <- v:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		select {
		case <-ch: // drop the stale value and try again
		case ch <- v:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
