package server

import (
	"context"
	"log/slog"
	"runtime/debug"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	pb "pushgate/gen/pushgate/v1"
)

// NewGRPCServer returns a gRPC server with the PushService, gRPC health and
// server reflection registered, and the interceptor chain in its fixed
// order: logging (outermost, so it sees the final status) → validation →
// recovery (innermost, so a panic in a handler becomes INTERNAL and is
// logged with its stack).
func NewGRPCServer(svc *Service, hs *health.Server, limits Limits, log *slog.Logger, opts ...grpc.ServerOption) *grpc.Server {
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	recOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in gRPC handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})}
	opts = append(opts,
		grpc.ChainUnaryInterceptor(
			logging.UnaryServerInterceptor(slogAdapter(log), logOpts...),
			limits.UnaryInterceptor(),
			recovery.UnaryServerInterceptor(recOpts...),
		),
		grpc.ChainStreamInterceptor(
			logging.StreamServerInterceptor(slogAdapter(log), logOpts...),
			recovery.StreamServerInterceptor(recOpts...),
		),
	)
	s := grpc.NewServer(opts...)
	pb.RegisterPushServiceServer(s, svc)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}

func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
