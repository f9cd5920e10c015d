package server

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
)

// replayPage is how many logged events one EventsAfter call reads.
const replayPage = 512

// validCursor checks WatchEventsRequest.after_cursor: a cursor of one log
// or a composite one (gateway.ParseCursors); whether it fits the engine's
// logs is the engine's to say.
func validCursor(c string) error {
	if c == "" || c == gateway.CursorZero {
		return nil
	}
	var err error
	if gateway.IsCursors(c) {
		_, err = gateway.ParseCursors(c)
	} else {
		_, _, err = gateway.ParseCursor(c)
	}
	if err != nil {
		return invalid("after_cursor", err.Error())
	}
	return nil
}

// eventLogError maps an error of the event log (EventsAfter,
// EventReadPos) to the stream's status.
func (s *Service) eventLogError(ctx context.Context, err error) error {
	var ce *gateway.CursorError
	switch {
	case errors.As(err, &ce):
		s.metrics.outOfRange.Inc()
		return cursorOutOfRange(ce)
	case errors.Is(err, gateway.ErrBadCursor):
		return invalid("after_cursor", err.Error())
	default:
		return s.internal(ctx, "WatchEvents", err)
	}
}

// replay sends the logged events after pos that want passes, page by
// page, until the log has no more, advancing pos; w is already
// registered, so every event logged after the last page reaches it live,
// and pos covers what the replay read.
func (s *Service) replay(ctx context.Context, pos *gateway.ReadPos, want func(gateway.Event) bool, w *gateway.Watcher, stream grpc.ServerStreamingServer[pb.Event]) error {
	s.metrics.replays.Inc()
	for {
		select {
		case <-s.draining:
			return status.Error(codes.Unavailable, "server shutting down; watch another node or retry")
		case <-w.Lost:
			// Live events came faster than the replay went: it would end
			// cut anyway.
			return s.lostError()
		default:
		}
		evs, err := s.gw.EventsAfter(ctx, pos.String(), replayPage)
		if err != nil {
			return s.eventLogError(ctx, err)
		}
		for _, e := range evs {
			e.Cursor = pos.Advance(e)
			if want(e) {
				if err := stream.Send(toEvent(e)); err != nil {
					return err
				}
				s.metrics.replayed.Inc()
			}
		}
		if len(evs) < replayPage {
			return nil
		}
	}
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
