# Sourced by gpu-all.sh and gpu-scaling.sh: the tiny-lm configurations both time, as lm/torch_tiny_gpt.py flags.
#   large: 12 × 768, batch 32 × 512 (keeps an H100 busy); medium: the same model, batch 16 × 512; small: 6 × 512, 32 × 256
lm_flags() {
  case $1 in
    large) echo "--layers 12 --d-model 768 --heads 12 --seq 512 --batch 32 --steps 80 --warmup 10" ;;
    medium) echo "--layers 12 --d-model 768 --heads 12 --seq 512 --batch 16 --steps 150 --warmup 15" ;;
    small) echo "--layers 6 --d-model 512 --heads 8 --seq 256 --batch 32 --steps 400 --warmup 30" ;;
    *) echo "unknown config $1 (large, medium or small)" >&2; return 2 ;;
  esac
}
