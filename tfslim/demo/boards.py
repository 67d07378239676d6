"""The boards every demo microcontroller file is measured against."""

BOARDS = ("nano33ble", "stm32f746", "nucleo-l4r5zi", "esp32s3", "rp2040")
