// Command go-receiver is the seed's receiver as its Go structs describe it: POST
// /api/v1/create/job makes a Job, writes it to receiver-topic keyed by its id, and answers only
// once Kafka has acknowledged it. It speaks jobflow's receiver contract (services/jobflow/receiver:
// the same optional body, status codes and JSON), so bench/ingest.py can measure the two side by
// side: the same work, done by net/http and franz-go instead of FastAPI and librdkafka.
//
// Settings come from the environment, under jobflow's receiver's names:
//
//	RECEIVER_HOST              address to bind (127.0.0.1)
//	RECEIVER_PORT              port of the HTTP API (8001)
//	KAFKA_BOOTSTRAP_SERVERS    Kafka bootstrap servers, comma-separated (127.0.0.1:9092)
//	KAFKA_RECEIVER_TOPIC       topic of new jobs (receiver-topic)
//	KAFKA_DELIVERY_TIMEOUT_MS  how long a record may wait for the broker's acknowledgement (5000)
//
// Only PLAINTEXT Kafka: it is a benchmark peer for the local stack, not a deployable service.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"
)

// jobflow's receiver's defaults (ReceiverSettings): the peer must do the same work per job.
const (
	defaultSleepMs  = 100
	sleepJitterMs   = 10
	defaultDataSize = 1024
	maxSleepMs      = 60_000
	maxDataSize     = 65_536
	maxBodyBytes    = 4096
	queueMaxRecords = 10_000
	retryAfter      = "1"
	shutdownTimeout = 20 * time.Second
)

// Job is what receiver-topic carries: the seed's struct. time.Time marshals as RFC 3339 with
// nanoseconds, trailing zeros trimmed, which is the pipeline's date format.
type Job struct {
	ID         string    `json:"id"`
	CreateDate time.Time `json:"create_date"`
	Sleep      int64     `json:"sleep"`
	Data       string    `json:"data"`
}

// CreatedJob is the answer to POST /api/v1/create/job, in jobflow's field order.
type CreatedJob struct {
	ID         string    `json:"id"`
	CreateDate time.Time `json:"create_date"`
	Sleep      int64     `json:"sleep"`
	DataSize   int       `json:"data_size"`
}

// createJobRequest is the optional body. The fields are floats because JSON Schema's integers
// include 296.0, which Go refuses to decode into an int; whole-ness is checked after.
type createJobRequest struct {
	Sleep    *float64 `json:"sleep"`
	DataSize *float64 `json:"data_size"`
}

// validationError is one entry of a 422's detail, in FastAPI's shape.
type validationError struct {
	Type string `json:"type"`
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
}

type receiver struct {
	client     *kgo.Client
	ackTimeout time.Duration
}

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(logger); err != nil {
		logger.Error("go-receiver stopped", "error", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	port := env("RECEIVER_PORT", "8001")
	deliveryTimeoutMs, err := strconv.Atoi(env("KAFKA_DELIVERY_TIMEOUT_MS", "5000"))
	if err != nil {
		return fmt.Errorf("KAFKA_DELIVERY_TIMEOUT_MS: %w", err)
	}
	deliveryTimeout := time.Duration(deliveryTimeoutMs) * time.Millisecond
	topic := env("KAFKA_RECEIVER_TOPIC", "receiver-topic")

	// jobflow's producer settings (services/jobflow/core/kafka.py) where franz-go's defaults
	// differ from librdkafka's; idempotence is on by default, acks=all is spelled out.
	client, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), ",")...),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(2*time.Millisecond),
		kgo.RecordDeliveryTimeout(deliveryTimeout),
		kgo.MaxBufferedRecords(queueMaxRecords),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		// librdkafka's default partitioner (consistent_random: CRC-32 of the key), so a job
		// lands on the partition jobflow's receiver would have put it on.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(kgo.SaramaHasher(crc32.ChecksumIEEE))),
	)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer client.Close()

	// Like jobflow's receiver: the ack is awaited as long as the client keeps trying, plus
	// slack for the answer to arrive.
	rcv := &receiver{client: client, ackTimeout: deliveryTimeout + time.Second}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/create/job", rcv.createJob)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	server := &http.Server{
		Addr:              net.JoinHostPort(env("RECEIVER_HOST", "127.0.0.1"), port),
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
	}

	stopping, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- server.ListenAndServe() }()
	logger.Info("listening", "address", server.Addr, "topic", topic)
	select {
	case err := <-served:
		return err
	case <-stopping.Done():
	}
	// Requests in flight get their acknowledgement (or their 503) before the client closes.
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return server.Shutdown(ctx)
}

func (rcv *receiver) createJob(w http.ResponseWriter, r *http.Request) {
	request, status, detail := readRequest(w, r)
	if status != http.StatusOK {
		writeJSON(w, status, map[string]any{"detail": detail})
		return
	}
	job := newJob(request)
	value, err := json.Marshal(job)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"detail": err.Error()})
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), rcv.ackTimeout)
	defer cancel()
	acked := make(chan error, 1) // the promise must not block: franz-go calls them one by one
	rcv.client.TryProduce(ctx, &kgo.Record{Key: []byte(job.ID), Value: value},
		func(_ *kgo.Record, err error) { acked <- err })
	select {
	case err = <-acked:
	case <-ctx.Done():
		err = ctx.Err()
	}
	switch {
	case errors.Is(err, kgo.ErrMaxBuffered):
		w.Header().Set("Retry-After", retryAfter)
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{
			"detail": "receiver is overloaded: too many jobs waiting for Kafka",
		})
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{
			"detail": fmt.Sprintf("Kafka did not acknowledge the job: %v", err),
		})
	default:
		writeJSON(w, http.StatusOK, CreatedJob{
			ID: job.ID, CreateDate: job.CreateDate, Sleep: job.Sleep, DataSize: len(job.Data),
		})
	}
}

// readRequest reads the optional body as jobflow's receiver does: a body that is not JSON is
// refused unread (415), a long one cut off (413), a bad one answered 422 with FastAPI's detail.
func readRequest(w http.ResponseWriter, r *http.Request) (createJobRequest, int, any) {
	var request createJobRequest
	hasBody := r.ContentLength > 0 || r.ContentLength == -1 // -1: chunked, length unknown
	if hasBody && !isJSON(r.Header.Get("Content-Type")) {
		return request, http.StatusUnsupportedMediaType,
			"the body must be JSON (Content-Type: application/json)"
	}
	tooLarge := fmt.Sprintf("the body is longer than %d bytes", maxBodyBytes)
	if r.ContentLength > maxBodyBytes {
		return request, http.StatusRequestEntityTooLarge, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var limited *http.MaxBytesError
	if errors.As(err, &limited) {
		return request, http.StatusRequestEntityTooLarge, tooLarge
	}
	if err != nil {
		return request, http.StatusBadRequest, err.Error()
	}
	if len(body) == 0 {
		return request, http.StatusOK, nil
	}
	if problem := decode(body, &request); problem != nil {
		return request, http.StatusUnprocessableEntity, []validationError{*problem}
	}
	for _, field := range []struct {
		name  string
		value *float64
		max   float64
	}{{"sleep", request.Sleep, maxSleepMs}, {"data_size", request.DataSize, maxDataSize}} {
		if problem := checkInteger(field.name, field.value, field.max); problem != nil {
			return request, http.StatusUnprocessableEntity, []validationError{*problem}
		}
	}
	return request, http.StatusOK, nil
}

// decode parses the body as one JSON object of known fields, naming the first problem as
// pydantic would. Unlike pydantic, encoding/json matches names case-insensitively: "Sleep" is
// taken for sleep, where jobflow's receiver refuses it as an extra field.
func decode(body []byte, request *createJobRequest) *validationError {
	decoder := json.NewDecoder(bytes.NewReader(body))
	decoder.DisallowUnknownFields()
	err := decoder.Decode(request)
	if err == nil && decoder.Decode(&struct{}{}) != io.EOF {
		err = errors.New("extra data after the JSON value")
	}
	var typeError *json.UnmarshalTypeError
	var syntaxError *json.SyntaxError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &syntaxError):
		return &validationError{"json_invalid", []any{"body", syntaxError.Offset},
			"JSON decode error"}
	case errors.As(err, &typeError) && typeError.Field == "":
		return &validationError{"model_attributes_type", []any{"body"},
			"Input should be a valid dictionary or object to extract fields from"}
	case errors.As(err, &typeError):
		return &validationError{"int_type", []any{"body", typeError.Field},
			"Input should be a valid integer"}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		return &validationError{"extra_forbidden", []any{"body", field},
			"Extra inputs are not permitted"}
	default: // cut short, or a second value after the first
		return &validationError{"json_invalid", []any{"body", len(body)}, "JSON decode error"}
	}
}

func checkInteger(name string, value *float64, maximum float64) *validationError {
	loc := []any{"body", name}
	switch {
	case value == nil:
		return nil
	case *value != math.Trunc(*value):
		return &validationError{"int_type", loc, "Input should be a valid integer"}
	case *value < 0:
		return &validationError{"greater_than_equal", loc,
			"Input should be greater than or equal to 0"}
	case *value > maximum:
		return &validationError{"less_than_equal", loc,
			fmt.Sprintf("Input should be less than or equal to %d", int(maximum))}
	}
	return nil
}

// newJob is the job a request asks for, jobflow's receiver's defaults filling in the rest.
func newJob(request createJobRequest) Job {
	sleep := int64(defaultSleepMs - sleepJitterMs + mathrand.IntN(2*sleepJitterMs+1))
	if request.Sleep != nil {
		sleep = int64(*request.Sleep)
	}
	size := defaultDataSize
	if request.DataSize != nil {
		size = int(*request.DataSize)
	}
	payload := make([]byte, (size+1)/2)
	rand.Read(payload) // never fails since Go 1.24: it crashes the program instead
	return Job{
		ID:         uuid.NewString(),
		CreateDate: time.Now().UTC(),
		Sleep:      sleep,
		Data:       hex.EncodeToString(payload)[:size],
	}
}

// isJSON accepts application/json and the +json types, with parameters, as jobflow does.
func isJSON(contentType string) bool {
	mediaType, _, _ := strings.Cut(contentType, ";")
	mediaType = strings.ToLower(strings.TrimSpace(mediaType))
	return mediaType == "application/json" ||
		(strings.HasPrefix(mediaType, "application/") && strings.HasSuffix(mediaType, "+json"))
}

// writeJSON answers compact JSON without a trailing newline, byte for byte as orjson writes it.
func writeJSON(w http.ResponseWriter, status int, body any) {
	encoded, err := json.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(encoded)
}

func env(name, fallback string) string {
	if value, ok := os.LookupEnv(name); ok && value != "" {
		return value
	}
	return fallback
}
