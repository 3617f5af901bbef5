package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/grpc"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

// uploadChunk is the size of each data message of an upload.
const uploadChunk = 64 << 10

// Upload streams a capture file to the controller (ControlService.UploadPcap,
// an admin operation), which decodes and stores its calls under a new upload
// agent. progress, when set, is called after each chunk with the bytes sent
// and the file size.
func Upload(ctx context.Context, conn grpc.ClientConnInterface, path, name string, progress func(sent, total int64)) (*orbweaverv1.UploadPcapResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	if name == "" {
		name = filepath.Base(path)
	}
	stream, err := orbweaverv1.NewControlServiceClient(conn).UploadPcap(ctx)
	if err != nil {
		return nil, fmt.Errorf("upload: open stream: %w", err)
	}
	start := &orbweaverv1.UploadPcapRequest{Msg: &orbweaverv1.UploadPcapRequest_Start{Start: &orbweaverv1.UploadStart{Name: name, SizeBytes: uint64(fi.Size())}}}
	if err := stream.Send(start); err != nil {
		return nil, uploadResult(stream, err)
	}
	buf := make([]byte, uploadChunk)
	var sent int64
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			// Send copies the message before returning, so buf may be reused.
			if err := stream.Send(&orbweaverv1.UploadPcapRequest{Msg: &orbweaverv1.UploadPcapRequest_Data{Data: buf[:n]}}); err != nil {
				return nil, uploadResult(stream, err)
			}
			sent += int64(n)
			if progress != nil {
				progress(sent, fi.Size())
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("upload: read %s: %w", path, rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	return resp, nil
}

// uploadResult turns a Send failure into the server's status: io.EOF from
// Send means the server ended the RPC; its status comes from CloseAndRecv.
func uploadResult(stream orbweaverv1.ControlService_UploadPcapClient, sendErr error) error {
	if !errors.Is(sendErr, io.EOF) {
		return fmt.Errorf("upload: send: %w", sendErr)
	}
	_, err := stream.CloseAndRecv()
	if err == nil {
		return errors.New("upload: the controller ended the upload early without an error")
	}
	return fmt.Errorf("upload: %w", err)
}
