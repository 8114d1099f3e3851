# SSDLite's schedule (mmdet's SSDLite-MobileNetV2 recipe): SGD, 500 iterations
# of linear warm-up, cosine annealing to 0 over 120 epochs. With the dataset
# repeated 5 times (datasets/coco_detection.py) that is 600 passes over COCO.
max_epochs = 120
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', begin=0, T_max=max_epochs, end=max_epochs,
         by_epoch=True, eta_min=0),
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.015, momentum=0.9, weight_decay=4.0e-5))

# lr 0.015 is for 8 GPUs x 24 images; with another total batch size set
# `--cfg-options auto_scale_lr.enable=True` to rescale it linearly.
auto_scale_lr = dict(enable=False, base_batch_size=192)
