package server

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
)

// replayPage is how many logged events one EventsAfter call reads.
const replayPage = 512

// validCursor checks WatchEventsRequest.after_cursor.
func validCursor(c string) error {
	if c == "" || c == gateway.CursorZero {
		return nil
	}
	if _, _, err := gateway.ParseCursor(c); err != nil {
		return invalid("after_cursor", err.Error())
	}
	return nil
}

// replay sends the logged events after cursor that want passes, page by
// page, until the log has no more; w is already registered, so every event
// logged after the last page reaches it live. It returns the last event
// read (sent or not), for the live events to skip what it covered.
func (s *Service) replay(ctx context.Context, cursor string, want func(gateway.Event) bool, w *gateway.Watcher, stream grpc.ServerStreamingServer[pb.Event]) (last gateway.Event, err error) {
	s.metrics.replays.Inc()
	for {
		select {
		case <-s.draining:
			return last, status.Error(codes.Unavailable, "server shutting down; watch another node or retry")
		case <-w.Lost:
			// Live events came faster than the replay went: it would end
			// cut anyway.
			return last, s.lostError()
		default:
		}
		evs, err := s.gw.EventsAfter(ctx, cursor, replayPage)
		var ce *gateway.CursorError
		switch {
		case errors.As(err, &ce):
			s.metrics.outOfRange.Inc()
			return last, cursorOutOfRange(ce)
		case errors.Is(err, gateway.ErrBadCursor):
			return last, invalid("after_cursor", err.Error())
		case err != nil:
			return last, s.internal(ctx, "WatchEvents", err)
		}
		for _, e := range evs {
			if want(e) {
				if err := stream.Send(toEvent(e)); err != nil {
					return last, err
				}
				s.metrics.replayed.Inc()
			}
			last = e
			cursor = e.Cursor
		}
		if len(evs) < replayPage {
			return last, nil
		}
	}
}

// covered reports whether the replay that ended with last already read e.
func covered(last, e gateway.Event) bool {
	if last.Cursor == "" {
		return false
	}
	epoch, _, _ := strings.Cut(last.Cursor, ".")
	return strings.HasPrefix(e.Cursor, epoch+".") && !last.Pos.Less(e.Pos)
}

// cursorOutOfRange is OUT_OF_RANGE with the oldest kept cursor in the
// message and in an ErrorInfo (metadata "oldest_cursor").
func cursorOutOfRange(ce *gateway.CursorError) error {
	st := status.New(codes.OutOfRange, "after_cursor: "+ce.Error()+`; resume from it, or from "0" (the oldest kept), or "" (live only)`)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason:   "CURSOR_OUT_OF_RANGE",
		Domain:   "pushgate",
		Metadata: map[string]string{"oldest_cursor": ce.Oldest},
	}); err == nil {
		st = d
	}
	return st.Err()
}

// eventFilter is the kinds a stream wants (none: all).
func eventFilter(kinds []gateway.EventKind) func(gateway.Event) bool {
	if len(kinds) == 0 {
		return func(gateway.Event) bool { return true }
	}
	var mask uint32
	for _, k := range kinds {
		mask |= 1 << k
	}
	return func(e gateway.Event) bool { return mask&(1<<e.Kind) != 0 }
}
