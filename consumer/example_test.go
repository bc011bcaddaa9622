package consumer_test

import (
	"context"
	"os/signal"
	"syscall"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/consumer"
)

// A handler returns nil only once the message's outcome is durable; the
// consumer commits a partition's offsets only over such messages, in order.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	c, err := consumer.New(consumer.Config{
		Brokers:     []string{"127.0.0.1:9092"},
		GroupID:     "postbackd",
		Topics:      []string{"payments.deposits", "players.registrations"},
		StartOffset: kafka.FirstOffset,
		Logger:      zap.NewExample(),
	}, consumer.HandlerFunc(func(ctx context.Context, m consumer.Message) error {
		// Classify, dispatch, audit; return an error to be retried in place.
		return nil
	}))
	if err != nil {
		panic(err)
	}
	// Run returns after SIGTERM once in-flight work drained and was committed.
	_ = c.Run(ctx)
}
